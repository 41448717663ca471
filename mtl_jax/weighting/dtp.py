"""Dynamic Task Prioritization: tasks with a low smoothed KPI get a high focal weight.

Guo, Haque, Huang, Yeung & Fei-Fei, "Dynamic Task Prioritization for Multitask Learning",
ECCV 2018, https://doi.org/10.1007/978-3-030-01270-0_17 (task-level prioritization: the loss
sum_t FL(kbar_t; gamma_t) L_t with the KPI moving average kbar_t). No official code was
released.

Each task has a key performance indicator k_i in [0, 1] (higher is better), smoothed over
steps by an exponential moving average, and weight the focal term of the smoothed KPI:

    kbar_i <- alpha k_i + (1 - alpha) kbar_i                     (the KPI average)
    w_i = FL(kbar_i; gamma) = -(1 - kbar_i)^gamma log(kbar_i)    (the task weight)

with kbar clipped to [eps, 1 - eps] before the log, so weights stay finite and positive. A task
whose KPI approaches 1 (mastered) gets a weight near 0; a struggling task a large one.

KPIs come from `inputs.kpis` over the global batch: an accuracy (classification, binary and
every kind outside `base.ERROR_KINDS`) as it is; an error (regression's mean absolute error)
mapped to exp(-MAE / regression_scale), which is 1 for a perfect fit and 1/e when the MAE
equals `regression_scale` (choose it on the scale of the targets).

The average starts at the first labelled observation of each task (not at 0, which would give
every task the maximal weight until the average warms up). A task with no labels in a batch
keeps its average and gets weight 0 at that step (its loss is 0). The weights of a step use the
average including that step's KPI, measured on the same batch in the forward pass; KPIs and
weights are constants (no gradient).

Deviations: the paper also weights examples within a task by a focal loss (gamma_0) and allows
one gamma per task; here the losses are left as they are and one gamma serves every task.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, error_kpis, labelled


class DTPState(NamedTuple):
  kpi_average: jnp.ndarray        # f32[T], the smoothed KPI kbar_i (0 until observed)
  observations: jnp.ndarray       # i32[T], labelled steps seen per task
  accuracy_kpi: jnp.ndarray       # i32[T], 1 for an accuracy KPI, 0 for an error, constant


def focal_weight(kpi: jnp.ndarray, gamma: float, eps: float) -> jnp.ndarray:
  """f32[T]: -(1 - k)^gamma log(k) with k clipped to [eps, 1 - eps]."""
  kpi = jnp.clip(kpi, eps, 1.0 - eps)
  return -jnp.power(1.0 - kpi, gamma) * jnp.log(kpi)


def unit_kpis(kpis: jnp.ndarray, accuracy_kpi: jnp.ndarray,
              regression_scale: float) -> jnp.ndarray:
  """f32[T] KPIs in [0, 1]: an accuracy as it is, an error (MAE) as exp(-MAE / scale)."""
  return jnp.where(accuracy_kpi > 0, kpis, jnp.exp(-kpis / regression_scale))


def make(alpha: float = 0.1, gamma: float = 2.0, regression_scale: float = 1.0,
         eps: float = 1e-3) -> Weighting:
  """Dynamic task prioritization (see the module docstring).

  Args:
    alpha: the weight of the current batch's KPI in the moving average (the paper's discount
      factor alpha in [0, 1]; larger follows recent batches more closely).
    gamma: the task-level focusing parameter (2, the focal loss's usual value; 0 gives
      w = -log kbar).
    regression_scale: the MAE at which a regression task's KPI is 1/e.
    eps: KPIs are clipped to [eps, 1 - eps] before the weight.
  """
  if not 0.0 < alpha <= 1.0:
    raise ValueError(f"alpha must be in (0, 1], got {alpha}")
  if gamma < 0:
    raise ValueError(f"gamma must be >= 0, got {gamma}")
  if regression_scale <= 0:
    raise ValueError(f"regression_scale must be > 0, got {regression_scale}")
  if not 0.0 < eps < 0.5:
    raise ValueError(f"eps must be in (0, 0.5), got {eps}")
  alpha, gamma, regression_scale, eps = (float(alpha), float(gamma), float(regression_scale),
                                         float(eps))

  def init(tasks) -> DTPState:
    is_error = error_kpis(tasks)
    return DTPState(jnp.zeros((len(is_error),), jnp.float32),
                    jnp.zeros((len(is_error),), jnp.int32),
                    jnp.asarray([not e for e in is_error], jnp.int32))

  def update(state: DTPState, inputs: WeightingInputs):
    has_labels = labelled(inputs.counts)
    kpis = unit_kpis(inputs.kpis, state.accuracy_kpi, regression_scale)
    smoothed = jnp.where(state.observations > 0,
                         alpha * kpis + (1.0 - alpha) * state.kpi_average, kpis)
    average = jnp.where(has_labels, smoothed, state.kpi_average)
    weights = jnp.where(has_labels, focal_weight(average, gamma, eps), 0.0)
    return weights, state._replace(kpi_average=average,
                                   observations=state.observations + has_labels)

  return Weighting(init, update)
