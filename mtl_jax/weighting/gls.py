"""Geometric Loss Strategy (GLS): minimise the geometric mean of the task losses.

Chennupati, Sistu, Yogamani and Rawashdeh, "MultiNet++: Multi-Stream Feature Aggregation and
Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019, its geometric
loss (the paper's GLS objective):
https://openaccess.thecvf.com/content_CVPRW_2019/papers/WAD/Chennupati_MultiNet_Multi-Stream_Feature_Aggregation_and_Geometric_Loss_Strategy_for_Multi-Task_CVPRW_2019_paper.pdf

    L_geo = (prod_i L_i)^(1/T) = G,    so    w_i = dL_geo/dL_i = G / (T L_i).

The train step applies w_i as constants in one backward pass, so its gradient is exactly the
gradient of G (the weights are evaluated at the batch losses). Head gradients are weighted too.

Deviations from the paper (which has neither): a task with no labels in the batch is left out
of the product, so G and T are the geometric mean and the number of the labelled tasks, and its
weight is 0; every loss is floored at `epsilon` (G and L_i use max(L_i, epsilon)), so a loss
that reaches 0 in float32 gives a finite weight instead of 0/0. The weights are the exact
derivatives of this guarded objective. G is computed in log space, so a product of many small
losses does not underflow. LibMTL's `GLS.py` backpropagates the same objective.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds


class GlsState(NamedTuple):
  """GLS keeps no state; the field only records the number of tasks."""
  num_tasks: jnp.ndarray  # i32[], T


def geometric_mean_weights(losses: jnp.ndarray, mask: jnp.ndarray,
                           epsilon: float) -> jnp.ndarray:
  """f32[T] weights G / (T L_i) over the tasks where `mask` is True (0 elsewhere).

  Args:
    losses: f32[T], the task losses.
    mask: bool[T], the tasks that take part (those with labels in the batch).
    epsilon: the floor of every loss.
  """
  log_losses = jnp.log(jnp.maximum(losses, epsilon))
  num_labelled = jnp.maximum(mask.sum(), 1)
  log_geometric_mean = jnp.where(mask, log_losses, 0.0).sum() / num_labelled
  weights = jnp.exp(log_geometric_mean - log_losses) / num_labelled
  return jnp.where(mask, weights, 0.0)


def make(epsilon: float = 1e-8) -> Weighting:
  """w_i = G / (T L_i), G the geometric mean of the labelled tasks' losses (see module doc).

  Args:
    epsilon: floor of each loss before the product, guarding log(0) and 1/0.
  """
  if not epsilon > 0:
    raise ValueError(f"gls epsilon must be > 0, got {epsilon}")

  def init(tasks) -> GlsState:
    return GlsState(jnp.asarray(len(task_kinds(tasks)), jnp.int32))

  def update(state: GlsState, inputs: WeightingInputs):
    return geometric_mean_weights(inputs.losses, labelled(inputs.counts), epsilon), state

  return Weighting(init, update)
