"""Labels from pandas DataFrames: one column of file paths and one column per task.

A cell that is None, NaN or an empty string is a missing label. Class sets come from the train
and val frames together, so both splits encode a class to the same index. A column is a
classification task unless `task_types` declares another kind ("binary", "regression", ...);
its class names keep their type (a column of whole numbers that pandas read as floats because
of empty cells gives int class names, not floats).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from mtl_jax import tasks as tasks_lib
from mtl_jax.config import ConfigError

def check_columns(frame: pd.DataFrame, tasks: Sequence[str], filepaths: str, split: str) -> None:
  """Raises ConfigError, listing the frame's columns, if a task or the path column is missing.

  Args:
    frame: the labels of one split.
    tasks: the task names, each a column of `frame`.
    filepaths: the name of the column of image file paths.
    split: the split's name for the message, e.g. "train".
  """
  if filepaths not in frame.columns:
    raise ConfigError(f"the file path column {filepaths!r} (filepaths=) is not a column of the "
                      f"{split} labels; columns: {list(frame.columns)}")
  _check_task_columns(frame, tasks, split)


def _check_task_columns(frame: pd.DataFrame, tasks: Sequence[str], split: str) -> None:
  absent = [name for name in tasks if name not in frame.columns]
  if len(absent) == 1:
    raise ConfigError(f"task {absent[0]!r} is not a column of the {split} labels; "
                      f"columns: {list(frame.columns)}")
  if absent:
    raise ConfigError(f"tasks {absent} are not columns of the {split} labels; "
                      f"columns: {list(frame.columns)}")


def raw_labels(column: pd.Series | Sequence[Any]) -> np.ndarray:
  """A column's labels as an object array: missing cells None, whole-number floats ints.

  pandas reads an integer column with empty cells as float64; this undoes that, so class
  names stay ints.
  """
  values = np.asarray(column, dtype=object).copy()
  present = ~tasks_lib.missing_mask(values)
  values[~present] = None
  whole = [isinstance(v, (float, np.floating)) and float(v).is_integer() for v in values[present]]
  if whole and all(whole):
    values[present] = [int(v) for v in values[present]]
  return values


def infer_tasks(train: pd.DataFrame, val: pd.DataFrame | None, task_names: Sequence[str],
                task_types: str | Mapping[str, str] | None = None,
                task_losses: Mapping[str, str | Callable] | None = None
                ) -> tuple[tasks_lib.Task, ...]:
  """The Tasks of `task_names`, classes from the train and val labels together.

  Args:
    train: the train labels, one column per task.
    val: the val labels (same columns), or None.
    task_names: which columns are tasks, in the order of the model's heads.
    task_types: {task: kind} ("classification", "binary", "regression", ...; see
      `mtl_jax.tasks.KINDS`), undeclared tasks being classification; or one kind for all.
    task_losses: {task: loss name of its kind (e.g. "huber") or callable
      `loss(outputs, labels, mask)`}; others use their kind's default loss.

  Returns:
    One `Task` per name, classification classes sorted.

  Raises:
    ConfigError: a task column is missing, a task has no labels in train, a task_types or
      task_losses entry is unknown, a binary task has more than two values, a regression task
      has non-numeric labels, or a classification task has fewer than two classes.

  Warns:
    UserWarning naming the task and the classes seen in only one of the two splits.
  """
  if isinstance(task_types, str):
    task_types = {name: task_types for name in task_names}
  task_types = dict(task_types or {})
  task_losses = dict(task_losses or {})
  _check_task_types(task_types, task_losses, task_names)
  _check_task_columns(train, task_names, "train")
  if val is not None:
    _check_task_columns(val, task_names, "val")
  splits = {"train": train} if val is None else {"train": train, "val": val}
  return tuple(_infer_task(name, {s: raw_labels(f[name]) for s, f in splits.items()},
                           task_types.get(name, tasks_lib.CLASSIFICATION),
                           task_losses.get(name))
               for name in task_names)


def _check_task_types(task_types: Mapping[str, str], task_losses: Mapping[str, Any],
                      task_names: Sequence[str]) -> None:
  for field, given in (("task_types", task_types), ("task_losses", task_losses)):
    unknown = sorted(set(given) - set(task_names))
    if unknown:
      raise ConfigError(f"{field} names {unknown}, which are not among the tasks "
                        f"{list(task_names)}")
  for name, kind in task_types.items():
    if kind not in tasks_lib.KINDS:
      raise ConfigError(f"task_types[{name!r}] must be one of {sorted(tasks_lib.KINDS)}, "
                        f"got {kind!r}")


def _infer_task(name: str, labels: Mapping[str, np.ndarray], kind: str,
                loss: str | Callable | None) -> tasks_lib.Task:
  if tasks_lib.missing_mask(labels["train"]).all():
    raise ConfigError(f"task {name!r} has no labels in the train labels")
  try:
    task = tasks_lib.infer_task(name, *labels.values(), kind=kind, loss=loss)
    for values in labels.values():
      tasks_lib.encode(task, values)  # a label outside the inferred classes fails here
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if task.is_classification and len(labels) > 1:
    _warn_one_split_classes(name, labels)
  return task


def _warn_one_split_classes(name: str, labels: Mapping[str, np.ndarray]) -> None:
  seen = {split: set(v[~tasks_lib.missing_mask(v)].tolist()) for split, v in labels.items()}
  for split, classes in seen.items():
    others = set().union(*(c for s, c in seen.items() if s != split))
    only_here = sorted(classes - others, key=str)
    if only_here:
      listed = ", ".join(repr(c) for c in only_here)
      verb = "class {} appears" if len(only_here) == 1 else "classes {} appear"
      warnings.warn(f"task {name!r}: {verb.format(listed)} only in the {split} labels",
                    UserWarning, stacklevel=5)  # 5: the caller of infer_tasks


def encode_frame(frame: pd.DataFrame, tasks: Sequence[tasks_lib.Task]) -> dict[str, np.ndarray]:
  """{task: int32[N] class indices (classification, binary), -1 missing | float32[N] targets,
  NaN missing}."""
  _check_task_columns(frame, [t.name for t in tasks], "given")
  return {t.name: tasks_lib.encode(t, raw_labels(frame[t.name])) for t in tasks}


# Strings that look like a missing label but are not one (only None, NaN and "" are): each
# would become a class of its own.
_MISSING_LOOKALIKES = ("nan", "none", "null", "na", "n/a")
_EXAMPLES_SHOWN = 3


def check_label_hygiene(frames: Mapping[str, pd.DataFrame], task_names: Sequence[str],
                        filepaths: str) -> None:
  """Catches labels that would silently train the wrong thing, with counts.

  Warns when a task's labels hold one value both as a number and as a string (int 1 and "1"
  become two classes), or strings such as "nan" and "None" (a class, not a missing label), and
  when files are in more than one split. Raises ConfigError when a file is listed twice in a
  split with different labels.

  Args:
    frames: {split name: labels}, e.g. {"train": ..., "val": ...}, columns already checked.
    task_names: the task columns.
    filepaths: the file-path column.
  """
  for name in task_names:
    values = [v for f in frames.values() for v in raw_labels(f[name]) if v is not None]
    _warn_mixed_types(name, values)
    _warn_missing_lookalikes(name, values)
  for split, frame in frames.items():
    _check_conflicting_duplicates(frame, task_names, filepaths, split)
  paths = {split: set(frame[filepaths].astype(str)) for split, frame in frames.items()}
  splits = list(paths)
  for i, first in enumerate(splits):
    for second in splits[i + 1:]:
      shared = sorted(paths[first] & paths[second])
      if shared:
        warnings.warn(f"{len(shared)} file(s) are in both the {first} and the {second} labels "
                      f"(e.g. {', '.join(shared[:_EXAMPLES_SHOWN])})", UserWarning, stacklevel=3)


def _warn_mixed_types(name: str, values: Sequence[Any]) -> None:
  types: dict[str, set] = {}
  for value in values:
    types.setdefault(str(value).strip(), set()).add(isinstance(value, str))
  mixed = sorted(text for text, kinds in types.items() if len(kinds) > 1)
  if mixed:
    rows = sum(str(v).strip() in mixed for v in values)
    warnings.warn(f"task {name!r}: {len(mixed)} value(s) appear both as a number and as a "
                  f"string ({', '.join(mixed[:_EXAMPLES_SHOWN])}; {rows} labels), and become "
                  "separate classes", UserWarning, stacklevel=4)


def _warn_missing_lookalikes(name: str, values: Sequence[Any]) -> None:
  found = [v for v in values if isinstance(v, str) and v.strip().lower() in _MISSING_LOOKALIKES]
  if found:
    shown = sorted(set(found))
    warnings.warn(f"task {name!r}: {len(found)} labels are the string(s) {shown}, which become "
                  "a class; leave the cell empty (or None/NaN) for a missing label",
                  UserWarning, stacklevel=4)


def _check_conflicting_duplicates(frame: pd.DataFrame, task_names: Sequence[str],
                                  filepaths: str, split: str) -> None:
  repeated = frame[frame[filepaths].duplicated(keep=False)]
  if repeated.empty:
    return
  labels = repeated[list(task_names)].astype(object).where(repeated[list(task_names)].notna())
  distinct = labels.astype(str).groupby(repeated[filepaths].astype(str)).nunique()
  conflicting = sorted(distinct.index[(distinct > 1).any(axis=1)])
  if conflicting:
    raise ConfigError(f"{len(conflicting)} file(s) are listed more than once in the {split} "
                      f"labels with different labels (e.g. "
                      f"{', '.join(conflicting[:_EXAMPLES_SHOWN])})")
