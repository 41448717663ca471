"""Surface normals: a unit 3-vector per pixel (NaN or 0 missing); 1 - cosine; angular errors.

Labels are f32[B, H, W, 3] (label_shape (H, W, 3)); a pixel is missing when a component is NaN
or the vector is 0, and then all three components are. The head emits three values per pixel,
normalised to unit length (`prepare`), as the MTAN and Nash-MTL SegNets do before the loss.
Loss: 1 - <n, n*> per valid pixel (`model_fit`'s "normal" loss). Metrics over the valid pixels
of the whole split, of the angle arccos(clip(<n, n*>, -1, 1)) in degrees as `normal_error`
computes it: its mean, its median (`dense_metrics.AngleHistogram`, within 0.01 degree) and
the fractions of pixels under 11.25, 22.5 and 30 degrees. A valid pixel counts three elements
(one per component) in the task's label count; every mean is per pixel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clu import metrics as clu_metrics
import jax.numpy as jnp
import numpy as np

from mtl_jax.tasks import base, regression
from mtl_jax.tasks.clu_metrics import masked_average
from mtl_jax.tasks.dense_metrics import AngleHistogram

if TYPE_CHECKING:
  from mtl_jax.tasks.task import Task

THRESHOLDS = (11.25, 22.5, 30.0)  # degrees: "within_11.25", "within_22.5", "within_30"


def cosine_loss(outputs: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """f32[B, H, W, 1]: 1 - <n, n*> of unit predictions [B, H, W, 3] and labels."""
  del mask
  return 1.0 - jnp.sum(outputs * labels, axis=-1, keepdims=True)


def angles(outputs: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """f32[B, H, W]: the angle between prediction and label in degrees."""
  return jnp.degrees(jnp.arccos(jnp.clip(jnp.sum(outputs * labels, axis=-1), -1.0, 1.0)))


def metric_name(threshold: float) -> str:
  return f"within_{threshold:g}"


class Normals(base.Kind):
  """float32 normal maps [B, H, W, 3] (NaN or 0 missing); three outputs per pixel."""
  name = "normals"
  integer_labels = False
  losses = {"cosine": cosine_loss}
  default_loss = "cosine"
  kpi_name = "mean_angle"

  def check(self, task: Task) -> tuple:
    if len(task.label_shape) != 3 or task.label_shape[-1] != 3:
      raise ValueError(f"task {task.name!r}: a normals task's label_shape is (H, W, 3), got "
                       f"{task.label_shape}")
    return super().check(task)

  def encode(self, task: Task, values: np.ndarray) -> np.ndarray:
    """float32; all three components NaN where one is NaN or the vector is 0."""
    normals = regression.Regression().encode(task, values)
    missing = np.isnan(normals).any(-1) | (normals == 0).all(-1)
    return np.where(missing[..., None], np.nan, normals).astype(np.float32)

  def mask(self, labels: jnp.ndarray) -> jnp.ndarray:
    valid = ~jnp.isnan(labels).any(-1, keepdims=True) & (labels != 0).any(-1, keepdims=True)
    return jnp.broadcast_to(valid, labels.shape)

  def prepare(self, task: Task, outputs: jnp.ndarray) -> jnp.ndarray:
    """Unit vectors [B, H, W, 3] (as `F.normalize`: divided by max(|n|, 1e-12))."""
    outputs = super().prepare(task, outputs)
    norm = jnp.sqrt(jnp.sum(jnp.square(outputs), axis=-1, keepdims=True))
    return outputs / jnp.maximum(norm, 1e-12)

  def metrics(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray,
              mask: jnp.ndarray) -> dict[str, clu_metrics.Metric]:
    angle, pixels = angles(outputs, labels), mask[..., 0]
    out = {"mean_angle": masked_average(angle, pixels),
           "median_angle": AngleHistogram.from_model_output(angle, pixels)}
    for threshold in THRESHOLDS:
      out[metric_name(threshold)] = masked_average(angle < threshold, pixels)
    return out

  def kpi(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    return angles(outputs, labels)[..., None]

  def predictions(self, task: Task, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """"<task>": the predicted unit normal map [H, W, 3] of each row."""
    norm = np.maximum(np.linalg.norm(outputs, axis=-1, keepdims=True), 1e-12)
    return {task.name: base.per_row((outputs / norm).astype(np.float32))}
