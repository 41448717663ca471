"""In-memory datasets: inputs plus one encoded label array per task, split train/val/test."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from mtl_jax import tasks as tasks_lib

Labels = Mapping[str, Sequence[Any]]


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: `inputs` f32[N, ...] and `labels` {task: i32[N] (-1 missing) | f32[N] (NaN)}."""
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
    """Marks `fraction` of each task's labelled training examples missing (seeded)."""
    if fraction <= 0:
      return self
    rng = np.random.default_rng([seed, 0x6D6A])
    labels = {}
    for task in self.tasks:
      y = self.train.labels[task.name].copy()
      present = np.flatnonzero(~tasks_lib.is_missing(task, y))
      drop = rng.choice(present, size=int(round(fraction * len(present))), replace=False)
      y[drop] = tasks_lib.MISSING_CLASS if task.is_classification else np.nan
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
                task_types: Mapping[str, str] | None = None,
                val: tuple[np.ndarray, Labels] | None = None,
                test: tuple[np.ndarray, Labels] | None = None,
                val_fraction: float = 0.1, test_fraction: float = 0.2,
                seed: int = 0) -> Dataset:
  """A Dataset from `inputs` [N, ...] and raw labels {task: [N]} (None/NaN = missing).

  Tasks are classification unless `task_types` says "regression"; class names come from all
  splits. Without explicit `val`/`test` pairs the arrays are split by `seed`.
  """
  task_types = dict(task_types or {})
  unknown = set(task_types) - set(labels)
  if unknown:
    raise ValueError(f"task_types names tasks without labels: {sorted(unknown)}")
  inputs = np.asarray(inputs, np.float32)
  for name, y in labels.items():
    if len(y) != len(inputs):
      raise ValueError(f"task {name!r} has {len(y)} labels for {len(inputs)} inputs")
  if val is None and test is None:
    rows = split_arrays(len(inputs), val_fraction, test_fraction, seed)
    parts = [(inputs[r], {t: np.asarray(y, dtype=object)[r] for t, y in labels.items()})
             for r in rows]
  elif val is not None and test is not None:
    parts = [(inputs, labels), (np.asarray(val[0], np.float32), val[1]),
             (np.asarray(test[0], np.float32), test[1])]
  else:
    raise ValueError("give both `val` and `test`, or neither to split `inputs`")
  task_list = tuple(
      tasks_lib.infer_task(name, *(p[1][name] for p in parts),
                           kind=task_types.get(name, tasks_lib.CLASSIFICATION))
      for name in labels)
  splits = [Split(x, {t.name: tasks_lib.encode(t, y[t.name]) for t in task_list})
            for x, y in parts]
  return Dataset(task_list, *splits)
