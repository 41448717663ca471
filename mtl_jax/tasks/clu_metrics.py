"""clu metrics the task kinds report: masked averages, RMSE, and a binned, mergeable AUC.

Each is a `clu.metrics.Metric` (a flax struct dataclass, so a pytree that a jitted eval step
can return) whose `merge` adds two batches exactly, so a split's value does not depend on how
it was batched. `mtl_jax.metrics.compute` leaves out a metric whose `is_empty()` (or, for a clu
`Average`, `count == 0`) says the split gave it nothing to measure.
"""

from __future__ import annotations

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import numpy as np


def masked_average(values: jnp.ndarray, mask: jnp.ndarray,
                   cls: type[clu_metrics.Average] = clu_metrics.Average) -> clu_metrics.Average:
  """The mean of `values` over the True elements of `mask` (same shape), as a clu Average."""
  values = jnp.broadcast_to(values.astype(jnp.float32), mask.shape)
  return cls(total=jnp.where(mask, values, 0.0).sum(), count=mask.sum().astype(jnp.int32))


@flax.struct.dataclass
class RootMeanSquare(clu_metrics.Average):
  """sqrt of the mean of the squared errors it averages: RMSE from `masked_average(err**2)`."""

  def compute(self):
    return jnp.sqrt(self.total / self.count)


@flax.struct.dataclass
class BinnedAUC(clu_metrics.Metric):
  """ROC AUC of a binary task from histograms of the predicted probability, merged by addition.

  The probabilities in [0, 1] fall into `bins` equal bins; `positives[i]` and `negatives[i]`
  count the labelled elements of each class in bin i. The AUC is then exact for scores rounded
  down to their bin: a positive ranks above every negative of a lower bin and half above those
  of its own bin (ties count one half, as in `sklearn.metrics.roc_auc_score`):

      AUC = sum_i pos_i * (sum_{j<i} neg_j + neg_i / 2) / (P * N).

  Its error against the AUC of the unrounded scores is at most half the fraction of
  positive-negative pairs that share a bin, sum_i pos_i * neg_i / (2 P N): small for 256 bins
  unless many positives and negatives share the extreme bins (a very confident model), where
  ranking inside one bin is lost. Undefined (left out by `metrics.compute`) until both classes
  are seen.

  Attributes:
    positives: i32[bins] counts of positive elements per probability bin.
    negatives: i32[bins] counts of negative elements per probability bin.
  """
  positives: jnp.ndarray
  negatives: jnp.ndarray

  @classmethod
  def empty(cls, bins: int = 256) -> "BinnedAUC":
    return cls(positives=jnp.zeros(bins, jnp.int32), negatives=jnp.zeros(bins, jnp.int32))

  @classmethod
  def from_model_output(cls, probabilities: jnp.ndarray, labels: jnp.ndarray,
                        mask: jnp.ndarray, bins: int = 256, **_) -> "BinnedAUC":
    """Histograms of `probabilities` (any shape) by `labels` (0/1), over the True `mask`."""
    index = jnp.clip(jnp.floor(probabilities * bins), 0, bins - 1).astype(jnp.int32).ravel()
    positive = (mask & (labels == 1)).ravel().astype(jnp.int32)
    negative = (mask & (labels == 0)).ravel().astype(jnp.int32)
    zeros = jnp.zeros(bins, jnp.int32)
    return cls(positives=zeros.at[index].add(positive), negatives=zeros.at[index].add(negative))

  def merge(self, other: "BinnedAUC") -> "BinnedAUC":
    return type(self)(positives=self.positives + other.positives,
                      negatives=self.negatives + other.negatives)

  def is_empty(self) -> bool:
    """Whether the AUC is undefined: no positive or no negative element seen yet."""
    return not (np.asarray(self.positives).sum() > 0 and np.asarray(self.negatives).sum() > 0)

  def compute(self) -> float:
    """The AUC on the host (float64 counts); NaN while `is_empty()`."""
    pos = np.asarray(jax.device_get(self.positives), np.float64)
    neg = np.asarray(jax.device_get(self.negatives), np.float64)
    if self.is_empty():
      return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))
