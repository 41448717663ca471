"""Semantic segmentation: a class per pixel (-1 missing); cross-entropy; mIoU, pixel accuracy.

Labels are class indices [B, H, W] (raw negative or NaN values are missing pixels); `classes`
names them, C = len(classes) logits per pixel. The loss is the softmax cross-entropy averaged
over the labelled pixels of the batch, as `F.nll_loss(..., ignore_index=-1)` in the MTAN and
Nash-MTL NYUv2 code. mIoU comes from a confusion matrix accumulated over the whole split
(`dense_metrics.ConfusionMatrix`), pixel accuracy from the labelled pixels of the split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clu import metrics as clu_metrics
import jax.numpy as jnp
import numpy as np

from mtl_jax.tasks import base, classification
from mtl_jax.tasks.clu_metrics import masked_average
from mtl_jax.tasks.dense_metrics import ConfusionMatrix

if TYPE_CHECKING:
  from mtl_jax.tasks.task import Task


class Segmentation(classification.Classification):
  """int32 class maps [B, H, W] (-1 missing); the head emits C logits per pixel."""
  name = "segmentation"
  kpi_name = "accuracy"

  def check(self, task: Task) -> tuple[Any, ...]:
    if len(task.label_shape) != 2:
      raise ValueError(f"task {task.name!r}: a segmentation task's label_shape is (H, W), got "
                       f"{task.label_shape}")
    return super().check(task)

  def infer_classes(self, name: str, values: np.ndarray) -> tuple[Any, ...]:
    """0 .. the largest class index present."""
    present = _indices(name, values)
    return tuple(range(int(present.max()) + 1 if (present >= 0).any() else 2))

  def encode(self, task: Task, values: np.ndarray) -> np.ndarray:
    codes = _indices(task.name, values)
    if (codes >= len(task.classes)).any():
      raise ValueError(f"task {task.name!r}: class index {int(codes.max())} is out of range for "
                       f"its {len(task.classes)} classes")
    return codes

  def metrics(self, task: Task, outputs: jnp.ndarray, labels: jnp.ndarray,
              mask: jnp.ndarray) -> dict[str, clu_metrics.Metric]:
    predictions = outputs.argmax(-1)
    return {"miou": ConfusionMatrix.from_model_output(predictions, labels, mask,
                                                      num_classes=len(task.classes)),
            "pixel_accuracy": masked_average(predictions == labels, mask)}

  def predictions(self, task: Task, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """"<task>": the most likely class index of every pixel, an int32 map per row."""
    return {task.name: base.per_row(outputs.argmax(-1).astype(np.int32))}


def _indices(name: str, values: np.ndarray) -> np.ndarray:
  """int32 class indices, -1 where a raw value is negative or NaN; ValueError naming the task
  for values that are not whole numbers."""
  if values.dtype.kind not in "biuf":
    raise ValueError(f"task {name!r}: segmentation labels must be class indices, got "
                     f"{values.dtype} values")
  values = values.astype(np.float64)
  missing = np.isnan(values) | (values < 0)
  present = values[~missing]
  if (present != np.round(present)).any():
    raise ValueError(f"task {name!r}: segmentation labels must be whole class indices, got "
                     f"{present[present != np.round(present)][0]}")
  return np.where(missing, -1, values).astype(np.int32)
