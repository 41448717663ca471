"""Depth: a distance per pixel (0 or NaN missing); L1 loss; absolute and relative error.

Labels are f32[B, H, W]. As in the MTAN and Nash-MTL NYUv2 code (`model_fit`, `depth_error`),
a pixel of depth 0 has no measurement; the loss is the mean absolute error over the valid
pixels of the batch, and the metrics are the absolute error |d - d*| and the relative error
|d - d*| / d*, each averaged over the valid pixels of the whole split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clu import metrics as clu_metrics
import jax.numpy as jnp
import numpy as np

from mtl_jax.tasks import base, regression
from mtl_jax.tasks.clu_metrics import masked_average

if TYPE_CHECKING:
  from mtl_jax.tasks.task import Task


class Depth(base.Kind):
  """float32 depth maps [B, H, W] (0 or NaN missing); the head emits one value per pixel."""
  name = "depth"
  integer_labels = False
  losses = {"l1": regression.l1, "mse": regression.mse, "huber": regression.huber}
  default_loss = "l1"
  kpi_name = "abs_error"

  def check(self, task: Task) -> tuple:
    if len(task.label_shape) != 2:
      raise ValueError(f"task {task.name!r}: a depth task's label_shape is (H, W), got "
                       f"{task.label_shape}")
    return super().check(task)

  def encode(self, task: Task, values: np.ndarray) -> np.ndarray:
    """float32, NaN where the raw depth is missing or 0."""
    depth = regression.Regression().encode(task, values)
    return np.where(depth == 0, np.nan, depth).astype(np.float32)

  def mask(self, labels: jnp.ndarray) -> jnp.ndarray:
    return ~jnp.isnan(labels) & (labels != 0)

  def metrics(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray,
              mask: jnp.ndarray) -> dict[str, clu_metrics.Metric]:
    error = jnp.abs(outputs - labels)
    return {"abs_error": masked_average(error, mask),
            "rel_error": masked_average(error / jnp.where(mask, labels, 1.0), mask)}

  def kpi(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    return jnp.abs(outputs - labels)

  def predictions(self, task: Task, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """"<task>": the predicted depth map of each row."""
    return {task.name: base.per_row(outputs.astype(np.float32))}
