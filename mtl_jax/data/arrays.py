"""In-memory datasets: inputs plus one encoded label array per task, split train/val/test."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mtl_jax import tasks as tasks_lib
from mtl_jax.errors import ConfigError

Labels = Mapping[str, Sequence[Any]]
TaskTypes = str | Mapping[str, str] | None
TaskLosses = Mapping[str, str | Callable] | None


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: `inputs` f32[N, ...] and `labels` {task: [N, *label_shape]}, int32 with -1
  missing (classification, binary) or float32 with NaN missing (regression)."""
  inputs: np.ndarray
  labels: dict[str, np.ndarray]

  def __len__(self) -> int:
    return len(self.inputs)

  def take(self, rows: np.ndarray) -> "Split":
    return Split(self.inputs[rows], {t: y[rows] for t, y in self.labels.items()})

  def batch(self, rows: np.ndarray) -> dict:
    """The batch dict of the contract in ARCHITECTURE.md for these rows."""
    return {"inputs": self.inputs[rows], "labels": {t: y[rows] for t, y in self.labels.items()}}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Tasks and the three splits, labels encoded by `mtl_jax.tasks.encode`."""
  tasks: tuple[tasks_lib.Task, ...]
  train: Split
  val: Split
  test: Split

  @property
  def task_names(self) -> tuple[str, ...]:
    return tuple(t.name for t in self.tasks)

  def select(self, names: Sequence[str]) -> "Dataset":
    """The same data restricted to the tasks `names`, in that order."""
    by_name = {t.name: t for t in self.tasks}
    keep = lambda s: Split(s.inputs, {n: s.labels[n] for n in names})
    return Dataset(tuple(by_name[n] for n in names), keep(self.train), keep(self.val),
                   keep(self.test))

  def blank_train_labels(self, fraction: float, seed: int) -> "Dataset":
    """Marks `fraction` of each task's labelled training examples missing (seeded).

    An example is labelled if any of its label elements is; blanking it blanks them all.
    """
    if fraction <= 0:
      return self
    rng = np.random.default_rng([seed, 0x6D6A])
    labels = {}
    for task in self.tasks:
      y = self.train.labels[task.name].copy()
      present = np.flatnonzero(tasks_lib.labelled_examples(task, y))
      drop = rng.choice(present, size=int(round(fraction * len(present))), replace=False)
      y[drop] = task.missing_value
      labels[task.name] = y
    return dataclasses.replace(self, train=Split(self.train.inputs, labels))


def split_arrays(n: int, val_fraction: float, test_fraction: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Deterministic disjoint train/val/test row indices of `n` examples."""
  order = np.random.default_rng(seed).permutation(n)
  n_test, n_val = int(round(test_fraction * n)), int(round(val_fraction * n))
  return (np.sort(order[n_test + n_val:]), np.sort(order[n_test:n_test + n_val]),
          np.sort(order[:n_test]))


def from_arrays(inputs: np.ndarray, labels: Labels, *,
                task_types: TaskTypes = None, task_losses: TaskLosses = None,
                val: tuple[np.ndarray, Labels] | None = None,
                test: tuple[np.ndarray, Labels] | None = None,
                val_fraction: float = 0.1, test_fraction: float = 0.2,
                seed: int = 0) -> Dataset:
  """A Dataset from `inputs` [N, ...] and raw labels {task: [N, *label_shape]}.

  A raw label is missing where it is None, NaN or an empty string, element by element. Class
  names come from all splits. Without explicit `val`/`test` pairs the arrays are split by
  `seed`.

  Args:
    inputs: [N, ...] features or images.
    labels: {task: [N] or [N, *label_shape]} raw labels, in the order of the model's heads.
    task_types: {task: kind} ("classification", "binary", "regression", or any kind in
      `mtl_jax.tasks.KINDS`), undeclared tasks being classification; or one kind for every
      task, e.g. `task_types="binary"` for forty attribute columns.
    task_losses: {task: loss name of its kind (e.g. "huber") or callable
      `loss(outputs, labels, mask) -> per-element losses`}; others use their kind's default.
    val, test: (inputs, labels) of the other splits, both or neither.
    val_fraction, test_fraction, seed: the random split when `val`/`test` are not given.

  Raises:
    ValueError naming the task and the problem: a label count that differs from the inputs',
      an unknown kind or loss, a binary task with three values, non-numeric regression labels.
  """
  task_types = resolve_task_types(task_types, list(labels))
  task_losses = dict(task_losses or {})
  unknown = sorted(set(task_losses) - set(labels))
  if unknown:
    raise ValueError(f"task_losses names tasks without labels: {unknown}")
  inputs = np.asarray(inputs, np.float32)
  for name, y in labels.items():
    if len(y) != len(inputs):
      raise ValueError(f"task {name!r} has {len(y)} labels for {len(inputs)} inputs")
  if val is None and test is None:
    rows = split_arrays(len(inputs), val_fraction, test_fraction, seed)
    arrays = {t: tasks_lib.label_array(y) for t, y in labels.items()}
    parts = [(inputs[r], {t: y[r] for t, y in arrays.items()}) for r in rows]
  elif val is not None and test is not None:
    parts = [(inputs, labels), (np.asarray(val[0], np.float32), val[1]),
             (np.asarray(test[0], np.float32), test[1])]
  else:
    raise ValueError("give both `val` and `test`, or neither to split `inputs`")
  task_list = tuple(
      tasks_lib.infer_task(name, *(p[1][name] for p in parts),
                           kind=task_types.get(name, tasks_lib.CLASSIFICATION),
                           loss=task_losses.get(name))
      for name in labels)
  splits = [Split(x, {t.name: tasks_lib.encode(t, y[t.name]) for t in task_list})
            for x, y in parts]
  return Dataset(task_list, *splits)


def resolve_task_types(task_types: TaskTypes, names: Sequence[str]) -> dict[str, str]:
  """{task: kind} from a mapping (undeclared tasks left out) or one kind name for all `names`.

  Raises ValueError for a mapping that names a task not in `names` or a kind not registered.
  """
  if isinstance(task_types, str):
    task_types = {name: task_types for name in names}
  task_types = dict(task_types or {})
  unknown = sorted(set(task_types) - set(names))
  if unknown:
    raise ValueError(f"task_types names tasks without labels: {unknown}")
  for name, kind in task_types.items():
    if kind not in tasks_lib.KINDS:
      raise ValueError(f"task_types[{name!r}] must be one of {sorted(tasks_lib.KINDS)}, "
                       f"got {kind!r}")
  return task_types


def image_inputs(images: np.ndarray, dataset_config) -> np.ndarray:
  """f32 inputs from images [N, H, W] or [N, H, W, C] (uint8 scaled to [0, 1]).

  Grayscale [N, H, W] gains a channel axis; `dataset_config.flatten` makes vectors [N, D] and
  `dataset_config.normalize = (mean, std)` maps x to (x - mean) / std after that.
  """
  scale = 255.0 if images.dtype == np.uint8 else 1.0
  x = images.astype(np.float32) / np.float32(scale)
  x = x.reshape(len(x), -1) if dataset_config.flatten else (x[..., None] if x.ndim == 3 else x)
  if dataset_config.normalize:
    normalize = tuple(dataset_config.normalize)
    if len(normalize) != 2 or not normalize[1] > 0:
      raise ConfigError(f"config.dataset.normalize must be () or (mean, std > 0), "
                        f"got {normalize}")
    mean, std = normalize
    x = (x - np.float32(mean)) / np.float32(std)
  return x
