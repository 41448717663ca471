"""DB-MTL: dual balancing of loss scales (log losses) and gradient magnitudes (max norm).

Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang and Kwok, "Dual-Balancing for Multi-Task
Learning", 2023, https://arxiv.org/abs/2308.12029, Algorithm 1; the authors' code is LibMTL's
`weighting/DB_MTL.py`.

Loss-scale balancing: each task's gradient is that of log L_i, g_i / (L_i + 1e-8). Gradient-
magnitude balancing: an exponential moving average of those gradients, each rescaled to the
largest average's norm. At update k = 1, 2, ... with beta_k = beta / k^beta_sigma:

    m_i      <- beta_k m_i + (1 - beta_k) g_i / (L_i + 1e-8)    (m_i = 0 at the start)
    a_i       = max_j ||m_j|| / (||m_i|| + 1e-8)
    direction = sum_i a_i m_i

LibMTL keeps the moving average of the gradients themselves, not of their norms, so the
direction is not a combination of this step's gradients: the method needs "grads", keeps the
m_i in its state (T times the size of the shared parameters, float32) and returns a
`Direction`. Its weights, logged as "weight/<task>", are the coefficients of this step's g_i in
the direction, a_i (1 - beta_k) / (L_i + 1e-8) (the whole weight when beta = 0). A task whose
average is 0 gets a_i = 0 (it multiplies a zero vector; LibMTL's a_i is then max_j ||m_j|| / 1e-8).

`init(tasks, grads_like=...)` allocates the averages from a pytree shaped like `inputs.grads`
([T, ...] leaves); without it `update` raises. Not allowed in the representation mode (as in
LibMTL): representation gradients of different batches belong to different examples.

Deviation: LibMTL back-propagates log L_i into the task heads too; here every head gets its
own task's unweighted gradient (the train step's rule for all methods).

Missing labels: a task without labels keeps its average m_i, is left out of the max norm and of
the direction (weight 0).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import (Direction, Weighting, WeightingInputs, combine,
                                    gradient_buffers, labelled, require_buffers, row_sums,
                                    scale_rows, task_kinds, track)

LOG_EPS = 1e-8   # log(L + eps), as LibMTL
NORM_EPS = 1e-8  # max_j ||m_j|| / (||m_i|| + eps), as LibMTL


class DBMTLState(NamedTuple):
  averages: Any       # [T, ...] pytree like inputs.grads: m_i (None until given grads_like)
  count: jnp.ndarray  # i32[], updates so far


def task_norms(grads: Any) -> jnp.ndarray:
  """f32[T]: ||g_i|| over every leaf of per-task gradients [T, ...]."""
  squares = [row_sums(jnp.square(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(grads)]
  return jnp.sqrt(sum(squares))


def max_norm_scales(norms: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """f32[T]: a_i = max_j ||m_j|| / (||m_i|| + eps) over the masked tasks; 0 outside or at norm 0."""
  largest = jnp.max(jnp.where(mask, norms, 0.0))
  return jnp.where(mask & (norms > 0), largest / (norms + NORM_EPS), 0.0)


def make(beta: float = 0.9, beta_sigma: float = 0.0) -> Weighting:
  """DB-MTL's direction (see the module docstring). Defaults: LibMTL's (the authors' code).

  Args:
    beta, beta_sigma: the moving average's factor beta / k^beta_sigma at update k (0.9 and 0:
      a constant 0.9).
  """
  if not 0 <= beta < 1 or beta_sigma < 0:
    raise ValueError(f"db_mtl needs 0 <= beta < 1 and beta_sigma >= 0; got beta={beta}, "
                     f"beta_sigma={beta_sigma}")

  def init(tasks, grads_like: Any = None) -> DBMTLState:
    num_tasks = len(task_kinds(tasks))
    return DBMTLState(gradient_buffers(grads_like, num_tasks, "db_mtl"),
                      jnp.zeros((), jnp.int32))

  def update(state: DBMTLState, inputs: WeightingInputs):
    require_buffers(state.averages, "db_mtl")
    has_labels = labelled(inputs.counts)
    k = (state.count + 1).astype(jnp.float32)
    decay = beta / k**beta_sigma
    log_scales = jnp.where(has_labels, 1.0 / (inputs.losses + LOG_EPS), 0.0)
    log_grads = scale_rows(log_scales, inputs.grads)
    averages = track(state.averages, log_grads, jnp.where(has_labels, 1.0 - decay, 0.0))
    scales = max_norm_scales(task_norms(averages), has_labels)
    weights = scales * (1.0 - decay) * log_scales
    return (Direction(combine(scales, averages), weights),
            DBMTLState(averages, state.count + 1))

  return Weighting(init, update, needs="grads", allows_rep=False, grad_state=True)
