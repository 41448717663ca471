"""Whole-split metrics of per-pixel tasks: mIoU from a confusion matrix, the median of angles.

Both are `clu.metrics.Metric`s whose `merge` adds counts, so a split's value is exact however
it is batched (the field's scripts average per batch: MTAN's `compute_miou` per image, Nash-MTL's
`normal_error` per batch; only Nash-MTL's `ConfMatrix` accumulates, as this does).
"""

from __future__ import annotations

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import numpy as np

ANGLE_BINS = 18000      # 0.01-degree bins over [0, 180]
MAX_ANGLE = 180.0


@flax.struct.dataclass
class ConfusionMatrix(clu_metrics.Metric):
  """counts[i, j]: labelled pixels of class i predicted as class j; computes the mean IoU.

  IoU_c = n_cc / (sum_j n_cj + sum_i n_ic - n_cc) (Long et al., "Fully Convolutional Networks",
  CVPR 2015, Sec. 5), averaged over the classes that occur in the labels or the predictions of
  the split; a class absent from both has no IoU and is left out (Nash-MTL's `ConfMatrix`
  would make the mean NaN). int32 counts hold 2^31 pixels per cell, 27,000 NYUv2 test sets.
  """
  counts: jnp.ndarray

  @classmethod
  def empty(cls, num_classes: int = 2) -> "ConfusionMatrix":
    return cls(counts=jnp.zeros((num_classes, num_classes), jnp.int32))

  @classmethod
  def from_model_output(cls, predictions: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray,
                        num_classes: int, **_) -> "ConfusionMatrix":
    """From predicted classes and labels (same shape) over the True elements of `mask`."""
    index = (labels.astype(jnp.int32) * num_classes + predictions.astype(jnp.int32)).ravel()
    flat = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(
        mask.ravel().astype(jnp.int32), mode="drop")
    return cls(counts=flat.reshape(num_classes, num_classes))

  def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
    return type(self)(counts=self.counts + other.counts)

  def is_empty(self) -> bool:
    return not np.asarray(self.counts).sum() > 0

  def compute(self) -> float:
    return float(mean_iou(np.asarray(jax.device_get(self.counts), np.float64)))


def mean_iou(counts: np.ndarray) -> float:
  """The mean IoU of a confusion matrix [C, C] (rows labels), over the classes that occur."""
  diagonal = np.diag(counts)
  union = counts.sum(0) + counts.sum(1) - diagonal
  present = union > 0
  return float(np.mean(diagonal[present] / union[present])) if present.any() else float("nan")


@flax.struct.dataclass
class AngleHistogram(clu_metrics.Metric):
  """Counts of angles (degrees) in `ANGLE_BINS` equal bins over [0, 180]; computes the median.

  The median is `np.median`'s, the middle order statistic (the mean of the two middle ones for
  an even count), each located in its bin by the cumulative counts and placed inside it as if
  the bin's angles were spread evenly: so never further than one bin width (0.01 degree) from
  the exact median.
  """
  counts: jnp.ndarray

  @classmethod
  def empty(cls, bins: int = ANGLE_BINS) -> "AngleHistogram":
    return cls(counts=jnp.zeros(bins, jnp.int32))

  @classmethod
  def from_model_output(cls, angles: jnp.ndarray, mask: jnp.ndarray, bins: int = ANGLE_BINS,
                        **_) -> "AngleHistogram":
    """From angles in degrees (any shape) over the True elements of `mask`."""
    index = jnp.clip(jnp.floor(angles * (bins / MAX_ANGLE)), 0, bins - 1).astype(jnp.int32)
    counts = jnp.zeros(bins, jnp.int32).at[index.ravel()].add(mask.ravel().astype(jnp.int32))
    return cls(counts=counts)

  def merge(self, other: "AngleHistogram") -> "AngleHistogram":
    return type(self)(counts=self.counts + other.counts)

  def is_empty(self) -> bool:
    return not np.asarray(self.counts).sum() > 0

  def compute(self) -> float:
    return histogram_median(np.asarray(jax.device_get(self.counts), np.float64))


def histogram_median(counts: np.ndarray, high: float = MAX_ANGLE) -> float:
  """The median of values binned in `len(counts)` equal bins over [0, high] (see
  `AngleHistogram`); NaN for no values."""
  total = int(counts.sum())
  if total <= 0:
    return float("nan")
  middle = [(total + 1) // 2] if total % 2 else [total // 2, total // 2 + 1]
  return float(np.mean([order_statistic(counts, k, high / len(counts)) for k in middle]))


def order_statistic(counts: np.ndarray, k: int, width: float) -> float:
  """The k-th smallest (1-based) binned value, placed evenly among its bin's values."""
  cumulative = np.cumsum(counts)
  b = int(np.searchsorted(cumulative, k))
  below = cumulative[b] - counts[b]
  return float((b + (k - below - 0.5) / counts[b]) * width)
