"""Binary classification: one logit per label element; sigmoid cross-entropy; accuracy, AUC.

Labels are any two distinct values: 0/1 or False/True give classes (0, 1) or (False, True)
even when only one of them occurs; any other two values are sorted and the second is the
positive class. Encoded int32 0/1, -1 missing. Many attributes (CelebA's 40) are 40 tasks of
this kind, each with its own mask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax.tasks import base
from mtl_jax.tasks.clu_metrics import BinnedAUC, masked_average

if TYPE_CHECKING:
  from mtl_jax.tasks.task import Task


def binary_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                         mask: jnp.ndarray) -> jnp.ndarray:
  """f32[B, ...] sigmoid cross-entropy of logits [B, ...] with 0/1 labels, stable for any logit."""
  del mask
  return optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))


class Binary(base.Kind):
  """int32 0/1 (-1 missing); the head emits one logit per label element."""
  name = "binary"
  integer_labels = True
  losses = {"binary_cross_entropy": binary_cross_entropy}
  default_loss = "binary_cross_entropy"
  kpi_name = "accuracy"

  def check(self, task: Task) -> tuple[Any, ...]:
    classes = task.classes or (0, 1)
    if len(classes) != 2 or classes[0] == classes[1]:
      raise ValueError(f"task {task.name!r}: a binary task has two classes (negative, "
                       f"positive), got {classes}")
    return classes

  def infer_classes(self, name: str, values: np.ndarray) -> tuple[Any, ...]:
    seen = base.distinct(values)
    if all(v in (0, 1) for v in seen):
      if seen and all(isinstance(v, bool) for v in seen):
        return (False, True)
      return (0, 1)
    if len(seen) == 2:
      return base.sorted_classes(seen)
    shown = ", ".join(repr(v) for v in base.sorted_classes(seen)[:5])
    raise ValueError(f"task {name!r} is binary but has {len(seen)} distinct label(s) "
                     f"({shown}{', ...' if len(seen) > 5 else ''}); binary labels are 0/1, "
                     "True/False, or two other values")

  def encode(self, task: Task, values: np.ndarray) -> np.ndarray:
    return base.class_indices(task, values)

  def metrics(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray,
              mask: jnp.ndarray) -> dict[str, clu_metrics.Metric]:
    return {"accuracy": masked_average(self.kpi(task, outputs, labels), mask),
            "auc": BinnedAUC.from_model_output(jax.nn.sigmoid(outputs), labels, mask)}

  def kpi(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    return ((outputs > 0) == (labels == 1)).astype(jnp.float32)

  def predictions(self, task: Task, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """"<task>": the predicted class (positive when p > 0.5); "<task>/probability": p."""
    probability = (1.0 / (1.0 + np.exp(-outputs.astype(np.float64)))).astype(np.float32)
    names = np.array(task.classes, dtype=object)[(outputs > 0).astype(int)]
    return {task.name: base.per_row(names),
            f"{task.name}/probability": base.per_row(probability)}
