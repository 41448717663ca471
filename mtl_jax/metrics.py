"""Metric bookkeeping: merging clu metrics over batches, flat metric names, and writers."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from clu import metrics as clu_metrics
import jax
import numpy as np


def _is_metric(x) -> bool:
  return isinstance(x, clu_metrics.Metric)


def merge(a, b):
  """Merges two pytrees of clu metrics of the same structure (None = empty)."""
  if a is None:
    return b
  return jax.tree.map(lambda x, y: x.merge(y), a, b, is_leaf=_is_metric)


def compute(per_task: Mapping[str, Mapping[str, clu_metrics.Metric]],
            prefix: str) -> dict[str, float]:
  """{"<prefix>/<task>/<metric>": value} of merged clu metrics (see `losses.task_metrics`).

  A metric the split gave nothing to measure is left out: an Average with count 0 (a task
  without labels in the split), or one whose `is_empty()` says so (an AUC without both
  classes).
  """
  out = {}
  for task, named in per_task.items():
    for name, metric in named.items():
      if _is_empty(metric):
        continue
      out[f"{prefix}/{task}/{name}"] = float(metric.compute())
  return out


def _is_empty(metric: clu_metrics.Metric) -> bool:
  if hasattr(metric, "is_empty"):
    return bool(metric.is_empty())
  return hasattr(metric, "count") and int(metric.count) == 0


def to_scalars(values: Mapping[str, Any]) -> dict[str, float]:
  return {k: float(np.asarray(v)) for k, v in values.items()}


class NoWriter:
  """The writer of processes other than 0, which write no metric files."""

  def write_scalars(self, step, scalars):
    pass

  def write_images(self, step, images):
    pass

  def write_texts(self, step, texts):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def create_writer(workdir: str):
  """A new TensorBoard events file in `workdir` on process 0 (`mtl_jax.events`), else nothing.

  The console shows a run through `mtl_jax.progress` and `mtl_jax.report` instead.
  """
  if jax.process_index() > 0:
    return NoWriter()
  from mtl_jax import events  # pylint: disable=import-outside-toplevel
  return events.EventWriter(workdir)


# Per-pixel tasks: depth errors and normals' angles (mtl_jax.tasks.depth, normals); mIoU,
# pixel accuracy and the "within_<degrees>" fractions are higher-is-better like accuracy.
LOWER_IS_BETTER = ("loss", "mae", "rmse", "abs_error", "rel_error", "mean_angle", "median_angle")


def lower_is_better(name: str) -> bool:
  """Whether a metric such as "test/depth/mae" improves downwards (its last part is a loss)."""
  return name.rsplit("/", 1)[-1] in LOWER_IS_BETTER


def delta_m(metrics: Mapping[str, float], baseline: Mapping[str, float]) -> float:
  """Δm%: the mean relative change of every baseline metric, positive when better.

  Maninis, Radosavovic and Kokkinos, "Attentive Single-Tasking of Multiple Tasks", CVPR 2019:

      Δm = (1/K) sum_k (-1)^{l_k} (M_m,k - M_b,k) / M_b,k * 100

  over the K metrics of `baseline` (flat names, e.g. "test/digit/accuracy"), with l_k = 1 for
  a lower-is-better metric (see `lower_is_better`). Raises ValueError if `metrics` lacks one of
  them or a baseline value is 0.
  """
  if not baseline:
    raise ValueError("delta_m needs at least one baseline metric")
  changes = []
  for name, base in baseline.items():
    if name not in metrics:
      raise ValueError(f"delta_m: {name!r} is in the baseline but not in the metrics")
    if base == 0:
      raise ValueError(f"delta_m: baseline {name!r} is 0, the relative change is undefined")
    sign = -1.0 if lower_is_better(name) else 1.0
    changes.append(sign * (metrics[name] - base) / base)
  return 100.0 * sum(changes) / len(changes)


def mean_rank(results: Mapping[str, Mapping[str, float]],
              names: Sequence[str]) -> dict[str, float]:
  """{method: its rank averaged over the metrics `names`}, 1 = best (the "MR" of Nash-MTL,
  FAMO and FairGrad's tables).

  `results` maps each method to its (seed-mean) metrics. For each metric the methods are
  ranked best first, lower-is-better metrics (see `lower_is_better`) upwards; tied methods
  share the mean of the ranks they span. Raises ValueError if a method lacks one of `names`.
  """
  if not names:
    raise ValueError("mean_rank needs at least one metric name")
  methods = list(results)
  ranks = np.zeros(len(methods))
  for name in names:
    missing = [m for m in methods if name not in results[m]]
    if missing:
      raise ValueError(f"mean_rank: {missing} lack the metric {name!r}")
    values = np.array([results[m][name] for m in methods], np.float64)
    better = values if lower_is_better(name) else -values
    ranks += np.array([np.sum(better < v) + (np.sum(better == v) + 1) / 2 for v in better])
  return {m: float(r / len(names)) for m, r in zip(methods, ranks)}


def weight_metrics(weights, tasks) -> dict[str, float]:
  """{"weight/<task>": w}: the task weights f32[T] of a step."""
  return {f"weight/{t.name}": float(w) for t, w in zip(tasks, jax.device_get(weights))}


def gradient_metrics(gram, tasks) -> tuple[dict[str, float], np.ndarray]:
  """({"grad_norm/<task>", "grad_cosine/<a>/<b>"}, the cosine matrix) of a step's Gram matrix
  f32[T, T] of the per-task gradients."""
  gram = np.asarray(jax.device_get(gram), np.float64)
  norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
  cosines = gram / np.maximum(np.outer(norms, norms), 1e-30)
  scalars = {f"grad_norm/{t.name}": float(n) for t, n in zip(tasks, norms)}
  for i, a in enumerate(tasks):
    for j in range(i + 1, len(tasks)):
      scalars[f"grad_cosine/{a.name}/{tasks[j].name}"] = float(cosines[i, j])
  return scalars, cosines
