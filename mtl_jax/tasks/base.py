"""The contract of a task kind, and the label helpers the kinds share.

A kind (classification, binary, regression, ...) says how raw labels become arrays, how wide a
head's output is, the per-element loss, the metrics, the KPI weighting methods read and how
predictions become DataFrame columns. It is a stateless object; everything particular to one
task (its classes, loss, label shape) comes from the `Task` passed in.

Shapes: a batch's labels for a task are `[B, *label_shape]`; the head emits any array with
`output_size = prod(output_shape)` elements per example, `output_shape = label_shape +
(channels,)`, which `Kind.prepare` reshapes channels-last (e.g. `[B, C]` logits of one label,
`[B, H, W, C]` of a per-pixel label, `[B, k]` values of a k-wide regression label).
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from clu import metrics as clu_metrics
import jax.numpy as jnp
import numpy as np
import pandas as pd

if TYPE_CHECKING:
  from mtl_jax.tasks.task import Task

# loss(outputs, labels, mask) -> f32 per-element losses, `labels` safe (missing ones replaced by
# 0) and `mask` bool[B, *label_shape] True where a label is present; the caller masks the result.
LossFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


class Kind:
  """One kind of task. Subclass in `mtl_jax/tasks/<kind>.py`, add one line to `registry.KINDS`.

  Class attributes:
    name: the kind's registered name.
    integer_labels: labels are int32 with -1 missing (True) or float32 with NaN missing.
    losses: {name: LossFn} the task's `loss=` may name.
    default_loss: the loss of a task that names none.
    kpi_name: the metric `kpi` gives, for weighting methods (e.g. "accuracy", "mae").
  """
  name: ClassVar[str]
  integer_labels: ClassVar[bool]
  losses: ClassVar[Mapping[str, LossFn]]
  default_loss: ClassVar[str]
  kpi_name: ClassVar[str]

  @property
  def missing_value(self) -> int | float:
    return -1 if self.integer_labels else float("nan")

  @property
  def label_dtype(self) -> type:
    return np.int32 if self.integer_labels else np.float32

  def check(self, task: Task) -> tuple[Any, ...]:
    """Validates `task` (raises ValueError naming it); returns the classes it should hold."""
    if task.classes:
      raise ValueError(f"task {task.name!r}: a {self.name} task has no classes, got "
                       f"{task.classes}")
    return ()

  def channels(self, task: Task) -> int:
    """Outputs per label element: the last axis of `output_shape`."""
    del task
    return 1

  def infer_classes(self, name: str, values: np.ndarray) -> tuple[Any, ...]:
    """The classes of a task named `name` from its raw labels (all splits, concatenated)."""
    del name, values
    return ()

  def encode(self, task: Task, values: np.ndarray) -> np.ndarray:
    """Raw labels [N, *label_shape] (see `label_array`) -> encoded, missing = `missing_value`."""
    raise NotImplementedError

  def mask(self, labels: jnp.ndarray) -> jnp.ndarray:
    """bool[B, *label_shape]: True where an encoded label is present."""
    return labels >= 0 if self.integer_labels else ~jnp.isnan(labels)

  def prepare(self, task: Task, outputs: jnp.ndarray) -> jnp.ndarray:
    """The head's f32 outputs [B, *label_shape, channels], the channel axis dropped if 1."""
    if int(np.prod(outputs.shape[1:])) != task.output_size:
      raise ValueError(f"task {task.name!r}: the model's output has shape {outputs.shape}, "
                       f"{task.output_size} values per example expected (output_shape "
                       f"{task.output_shape})")
    channels = self.channels(task)
    shape = (outputs.shape[0],) + task.label_shape + ((channels,) if channels > 1 else ())
    return outputs.astype(jnp.float32).reshape(shape)

  def metrics(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray,
              mask: jnp.ndarray) -> dict[str, clu_metrics.Metric]:
    """{name: clu metric} besides "loss", from `prepare`d outputs and safe labels."""
    raise NotImplementedError

  def kpi(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """f32[B, *label_shape] per-element KPI (`kpi_name`), averaged over the labelled ones."""
    raise NotImplementedError

  def predictions(self, task: Task, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """DataFrame columns {name: [N]} from `prepare`d raw outputs (numpy)."""
    raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# Raw labels.


def plain(value):
  """A JSON-serialisable Python scalar for a numpy scalar."""
  return value.item() if isinstance(value, np.generic) else value


def label_array(values: Any) -> np.ndarray:
  """Raw labels as an array [N, ...]: numeric and bool arrays kept, anything else object."""
  array = np.asarray(values)
  if array.dtype.kind in "biuf":
    return array
  return np.asarray(values, dtype=object) if array.dtype != object else array


def missing_mask(values: Any) -> np.ndarray:
  """True where a raw label is missing: None, NaN, or an empty (or blank) string."""
  array = label_array(values)
  if array.dtype.kind == "f":
    return np.isnan(array)
  if array.dtype.kind in "biu":
    return np.zeros(array.shape, bool)
  flat = pd.Series(array.ravel())
  blank = flat.map(lambda v: isinstance(v, str) and not v.strip())
  return (flat.isna() | blank).to_numpy(bool).reshape(array.shape)


def distinct(values: np.ndarray) -> list[Any]:
  """The distinct present labels as Python scalars; whole-number floats become ints."""
  present = values[~missing_mask(values)].ravel()
  unique = [plain(v) for v in (np.unique(present) if present.dtype.kind in "biuf"
                               else pd.unique(present))]
  floats = [v for v in unique if isinstance(v, float)]
  if floats and all(v.is_integer() for v in floats):
    unique = list(dict.fromkeys(int(v) if isinstance(v, float) else v for v in unique))
  return unique


def sorted_classes(classes: list[Any]) -> tuple[Any, ...]:
  """Sorted, or sorted by their text when the types do not compare."""
  try:
    return tuple(sorted(classes))
  except TypeError:
    return tuple(sorted(classes, key=str))


def _is_number(value) -> bool:
  return isinstance(value, (numbers.Real, np.bool_)) and not isinstance(value, str)


def class_indices(task: Task, values: np.ndarray) -> np.ndarray:
  """int32 index of each raw label in `task.classes`, -1 where missing.

  Raises ValueError naming the task and the first label that is not one of its classes.
  """
  missing = missing_mask(values)
  classes = task.classes
  if values.dtype.kind in "biuf" and all(_is_number(c) for c in classes):
    table = np.asarray(classes, np.float64)
    order = np.argsort(table, kind="stable")
    flat = np.where(missing, np.nan, values.astype(np.float64)).ravel()
    pos = np.clip(np.searchsorted(table[order], flat), 0, len(table) - 1)
    codes = np.where(table[order][pos] == flat, order[pos], -1).reshape(values.shape)
  else:
    flat = np.asarray(values, dtype=object).ravel()
    codes = pd.Index(list(classes), dtype=object).get_indexer(flat).reshape(values.shape)
  unknown = (codes < 0) & ~missing
  if unknown.any():
    label = plain(np.asarray(values).ravel()[np.argmax(unknown.ravel())])
    raise ValueError(f"task {task.name!r}: label {label!r} is not one of its classes "
                     f"{task.classes}")
  return np.where(missing, -1, codes).astype(np.int32)


def per_row(values: np.ndarray) -> np.ndarray:
  """values [N, ...] as a DataFrame column: itself if 1-D, else an object array of N arrays."""
  if values.ndim == 1:
    return values
  column = np.empty(len(values), dtype=object)
  column[:] = list(values)
  return column
