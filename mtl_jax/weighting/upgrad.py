"""UPGrad: the mean of each task gradient's projection onto the dual cone of all of them.

Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
https://arxiv.org/abs/2406.16232: the aggregator A_UPGrad(J) = sum_i p_i pi_J(g_i), with pi_J
the projection onto the dual cone {x : J x >= 0} of the rows of J (the paper's Eq. 3) and p the
preference vector (default uniform, 1/T). Reference code: torchjd (`aggregation/_upgrad.py`,
`_utils/dual_cone.py`, `_linalg/_gramian.py`), also LibMTL's `weighting/UPGrad.py`.

By the paper's Proposition 1, pi_J(J^T u) = J^T v with v = argmin_{v >= u} v^T G v, so the
method needs only G: for each task i the solver finds v^(i) with lower bound u = p_i e_i, and
the weights are w = sum_i v^(i) (`solvers.dual_cone_weights`, an active-set method run in the
step; torchjd solves the same problems on the host with quadprog). As in torchjd, G is first
divided by its trace (replaced by 0 when the trace is below `norm_eps`) and `reg_eps` I is added
so the problem is positive definite (`solvers.regularized_gram`).

Properties: d = w^T J has <g_j, d> >= 0 for every task j up to the ridge, precisely
<g_j, d> >= -reg_eps trace(G) w_j (from the KKT conditions (G/tr G + reg_eps I) v = mu >= 0);
non-conflicting gradients (G >= 0 entrywise) get their preference weights unchanged.
Consequence of torchjd's `norm_eps` (kept for parity): when trace(G) = sum_i ||g_i||^2 <
norm_eps, the weights are p (the mean gradient, no projection); pass `norm_eps=0` to project at
every scale.

Tasks without labels in the batch have zero rows of G and lower bound 0, so their weight is 0;
the uniform preference is over the labelled tasks. The state only keeps the last weights.
Gradients of the shared parameters only (`allows_rep=False`, as LibMTL): the dual-cone
guarantee is about the parameters' Jacobian, and torchjd aggregates that Jacobian too.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from mtl_jax.weighting import solvers
from mtl_jax.weighting.base import (Weighting, WeightingInputs, check_dual_cone_hyperparameters,
                                    check_preference_length, labelled, preference, task_kinds)


class UpgradState(NamedTuple):
  """UPGrad needs no state; it keeps the last step's weights for inspection."""
  weights: jnp.ndarray  # f32[T], the last step's w (0 before the first step)


def upgrad_weights(gram: jnp.ndarray, pref: jnp.ndarray, norm_eps: float = 1e-4,
                   reg_eps: float = 1e-4, iterations: int | None = None,
                   tol: float = solvers.DUAL_CONE_TOL) -> jnp.ndarray:
  """f32[T]: w = sum_i v^(i), v^(i) = argmin_{v >= p_i e_i} v^T G' v, G' the regularised G."""
  quad = solvers.regularized_gram(gram, norm_eps, reg_eps)
  lowers = jnp.diag(jnp.asarray(pref, jnp.float32))
  solve = lambda lower: solvers.dual_cone_weights(quad, lower, iterations, tol)
  return jax.vmap(solve)(lowers).sum(axis=0)


def make(pref_vector: Sequence[float] | None = None, norm_eps: float = 1e-4,
         reg_eps: float = 1e-4, iterations: int | None = None,
         tol: float = solvers.DUAL_CONE_TOL) -> Weighting:
  """UPGrad's weights (see the module docstring).

  Args:
    pref_vector: one non-negative weight per task combining the projections (None: uniform
      1/T over the labelled tasks).
    norm_eps: below this trace of G, G is treated as 0 (torchjd's default 1e-4).
    reg_eps: ridge added to the trace-normalised G (torchjd's default 1e-4).
    iterations: the active-set solver's iteration cap (None: 4T + 8).
    tol: the solver's relative tolerance on its multipliers.
  """
  check_dual_cone_hyperparameters("upgrad", pref_vector, norm_eps, reg_eps)

  def init(tasks) -> UpgradState:
    check_preference_length("upgrad", pref_vector, len(task_kinds(tasks)))
    return UpgradState(jnp.zeros((len(task_kinds(tasks)),), jnp.float32))

  def update(state: UpgradState, inputs: WeightingInputs):
    del state
    mask = labelled(inputs.counts)
    weights = upgrad_weights(inputs.gram, preference(pref_vector, mask), norm_eps, reg_eps,
                             iterations, tol)
    weights = jnp.where(mask, weights, 0.0)
    return weights, UpgradState(weights)

  return Weighting(init, update, needs="gram")
