"""DualProj: the mean gradient projected onto the dual cone of the task gradients.

Defined alongside UPGrad by Quinton and Rey, "Jacobian Descent for Multi-Objective
Optimization", 2024, https://arxiv.org/abs/2406.16232: A_DualProj(J) = pi_J(J^T p), the
projection (the paper's Eq. 3) of the preference-weighted gradient (default the mean,
p = 1/T) onto the dual cone {x : J x >= 0}; the same direction as Eq. 11 of Lopez-Paz and
Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017. Reference code:
torchjd's `aggregation/_dualproj.py`.

By the paper's Proposition 1 the weights are v = argmin_{v >= p} v^T G v: one problem of
UPGrad's kind with lower bound p instead of p_i e_i (`solvers.dual_cone_weights`, the
active-set method, run in the step), with torchjd's preprocessing of G (divided by its trace,
0 below `norm_eps`, plus `reg_eps` I; see `solvers.regularized_gram`). Up to the ridge the
direction has a non-negative inner product with every task gradient, and it is the closest
such direction to the mean gradient. When trace(G) < norm_eps the weights are p (torchjd's
behaviour; `norm_eps=0` projects at every scale).

Tasks without labels have zero rows of G and lower bound 0: weight 0, and the mean is over
the labelled tasks. The state only keeps the last weights. Gradients of the shared parameters
only (`allows_rep=False`), as UPGrad.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp

from mtl_jax.weighting import solvers
from mtl_jax.weighting.base import (Weighting, WeightingInputs, check_dual_cone_hyperparameters,
                                    check_preference_length, labelled, preference, task_kinds)


class DualProjState(NamedTuple):
  """DualProj needs no state; it keeps the last step's weights for inspection."""
  weights: jnp.ndarray  # f32[T], the last step's w (0 before the first step)


def dualproj_weights(gram: jnp.ndarray, pref: jnp.ndarray, norm_eps: float = 1e-4,
                     reg_eps: float = 1e-4, iterations: int | None = None,
                     tol: float = solvers.DUAL_CONE_TOL) -> jnp.ndarray:
  """f32[T]: v = argmin_{v >= p} v^T G' v, G' the regularised G."""
  quad = solvers.regularized_gram(gram, norm_eps, reg_eps)
  return solvers.dual_cone_weights(quad, jnp.asarray(pref, jnp.float32), iterations, tol)


def make(pref_vector: Sequence[float] | None = None, norm_eps: float = 1e-4,
         reg_eps: float = 1e-4, iterations: int | None = None,
         tol: float = solvers.DUAL_CONE_TOL) -> Weighting:
  """DualProj's weights (see the module docstring).

  Args:
    pref_vector: one non-negative weight per task for the projected combination (None:
      uniform 1/T over the labelled tasks, the mean gradient).
    norm_eps: below this trace of G, G is treated as 0 (torchjd's default 1e-4).
    reg_eps: ridge added to the trace-normalised G (torchjd's default 1e-4).
    iterations: the active-set solver's iteration cap (None: 4T + 8).
    tol: the solver's relative tolerance on its multipliers.
  """
  check_dual_cone_hyperparameters("dualproj", pref_vector, norm_eps, reg_eps)

  def init(tasks) -> DualProjState:
    num_tasks = len(task_kinds(tasks))
    check_preference_length("dualproj", pref_vector, num_tasks)
    return DualProjState(jnp.zeros((num_tasks,), jnp.float32))

  def update(state: DualProjState, inputs: WeightingInputs):
    del state
    mask = labelled(inputs.counts)
    weights = dualproj_weights(inputs.gram, preference(pref_vector, mask), norm_eps,
                               reg_eps, iterations, tol)
    weights = jnp.where(mask, weights, 0.0)
    return weights, DualProjState(weights)

  return Weighting(init, update, needs="gram")
