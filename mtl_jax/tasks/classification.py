"""Softmax classification: one of C classes per label element; cross-entropy; accuracy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clu import metrics as clu_metrics
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax.tasks import base
from mtl_jax.tasks.clu_metrics import masked_average

if TYPE_CHECKING:
  from mtl_jax.tasks.task import Task


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """f32[B, ...] softmax cross-entropy of logits [B, ..., C] with class indices [B, ...]."""
  del mask
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


class Classification(base.Kind):
  """int32 class indices (-1 missing); the head emits C logits per label element."""
  name = "classification"
  integer_labels = True
  losses = {"cross_entropy": cross_entropy}
  default_loss = "cross_entropy"
  kpi_name = "accuracy"

  def check(self, task: Task) -> tuple[Any, ...]:
    if len(task.classes) < 2:
      raise ValueError(f"task {task.name!r} has {len(task.classes)} class(es); "
                       "classification needs at least 2")
    if len(set(task.classes)) != len(task.classes):
      raise ValueError(f"task {task.name!r}: its classes {task.classes} repeat a name")
    return task.classes

  def channels(self, task: Task) -> int:
    return len(task.classes)

  def infer_classes(self, name: str, values: np.ndarray) -> tuple[Any, ...]:
    return base.sorted_classes(base.distinct(values))

  def encode(self, task: Task, values: np.ndarray) -> np.ndarray:
    return base.class_indices(task, values)

  def metrics(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray,
              mask: jnp.ndarray) -> dict[str, clu_metrics.Metric]:
    return {"accuracy": masked_average(self.kpi(task, outputs, labels), mask)}

  def kpi(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    return (outputs.argmax(-1) == labels).astype(jnp.float32)

  def predictions(self, task: Task, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """"<task>": the most likely class name; "<task>/<class>": its softmax probability."""
    shifted = np.exp(outputs - outputs.max(-1, keepdims=True))
    probabilities = (shifted / shifted.sum(-1, keepdims=True)).astype(np.float32)
    names = np.array(task.classes, dtype=object)[probabilities.argmax(-1)]
    columns = {task.name: base.per_row(names)}
    for j, name in enumerate(task.classes):
      columns[f"{task.name}/{name}"] = base.per_row(probabilities[..., j])
    return columns
