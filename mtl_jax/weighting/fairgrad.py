"""FairGrad: alpha-fair resource allocation among the tasks.

Ban and Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024,
https://arxiv.org/abs/2402.15638; official code github.com/OptMN-Lab/fairgrad
(`methods/weight_methods.py`, class FairGrad), also LibMTL's `weighting/FairGrad.py`.

The update d = sum_i w_i g_i maximises the alpha-fair utility of the tasks' loss decreases;
its weights w > 0 solve the paper's condition

    (G w)_i = w_i^(-1/alpha)    for every task i,  G = J J^T.

alpha = 1 is Nash-MTL's proportional fairness; larger alpha moves toward max-min fairness. The
official code solves it on the host with scipy's least_squares from w = 1/T. Here it is the
stationarity condition of a strictly convex function (`solvers.alpha_fair_weights` with power
1/alpha: Newton's method with a line search, warm-started from the previous solution kept in
the state), solved for G / ||G||_F and rescaled exactly: if G_n w_n = w_n^(-1/alpha) then
w = w_n ||G||_F^(-alpha/(1+alpha)) solves the raw equation. The solver stops when
max_i |w_i^(1/alpha) (G_n w)_i - 1| <= tol (default 1e-5) or after `iterations` (default 50).

As in the official code (`overwrite_grad` multiplies by n_tasks "to match the sum loss", then
the trainer clips the shared gradient with clip_grad_norm_(max_norm)), the applied weights are
T w scaled by min(1, max_norm / (||T w^T J|| + 1e-6)); these are the reported weights.
T counts the tasks in the combination (labelled, nonzero gradient). The scale and the clip
are computed in log space, so tiny or huge gradients cannot overflow (the raw weights grow as
the gradients shrink, and for alpha > 1 so does the norm of the unclipped update).
Deviations: a relative ridge `reg` (default 1e-6; G + reg diag(G), a ridge on the cosine
matrix) keeps a solution for linearly dependent gradients (exactly opposite gradients: large
equal weights, a zero combination) where the equation has none; a zero gradient
(G_ii <= 1e-20 max_j G_jj), which no weight can balance, gets weight 0 and keeps its warm
start; an all-zero G gives weights 0 and keeps the state.

Tasks without labels get weight 0, are left out of the equation and keep their warm start.
Gradients of the shared parameters only (`allows_rep=False`; the official code and LibMTL
reject representation gradients).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting import solvers
from mtl_jax.weighting.base import (Weighting, WeightingInputs, frobenius_norm, labelled,
                                    task_kinds)


class FairGradState(NamedTuple):
  normalized_weights: jnp.ndarray  # f32[T], the last solution for G / ||G||_F (warm start)


def applied_weights(normalized_weights: jnp.ndarray, normalized_gram: jnp.ndarray,
                    scale: jnp.ndarray, alpha: float, num_tasks: jnp.ndarray,
                    max_norm: float) -> jnp.ndarray:
  """f32[T]: T w clipped to max_norm, w = w_n scale^(-alpha/(1+alpha)), in log space."""
  log_scale = jnp.log(scale)
  log_factor = jnp.log(num_tasks.astype(jnp.float32)) - alpha / (1.0 + alpha) * log_scale
  if max_norm > 0:
    squared = jnp.maximum(normalized_weights @ normalized_gram @ normalized_weights, 0.0)
    log_norm = log_factor + 0.5 * log_scale + 0.5 * jnp.log(squared)
    log_clip = jnp.log(max_norm) - jnp.logaddexp(log_norm, jnp.log(1e-6))
    log_factor = log_factor + jnp.minimum(0.0, log_clip)
  return normalized_weights * jnp.exp(log_factor)


def make(alpha: float = 2.0, max_norm: float = 1.0,
         iterations: int = solvers.ALPHA_FAIR_ITERATIONS, tol: float = solvers.ALPHA_FAIR_TOL,
         reg: float = solvers.ALPHA_FAIR_REG) -> Weighting:
  """FairGrad's weights (see the module docstring).

  Args:
    alpha: the fairness exponent, > 0 (the official run scripts use 2.0 on every benchmark;
      1.0 is Nash-MTL's condition).
    max_norm: clip the shared update to this norm; 0 disables (official default 1.0).
    iterations: the most Newton steps per step.
    tol: tolerance on max_i |w_i^(1/alpha) (G_n w)_i - 1|.
    reg: relative ridge, G + reg diag(G).
  """
  if not alpha > 0 or max_norm < 0 or iterations < 1 or not tol > 0 or reg < 0:
    raise ValueError("fairgrad needs alpha > 0, max_norm >= 0, iterations >= 1, tol > 0, "
                     f"reg >= 0; got {alpha}, {max_norm}, {iterations}, {tol}, {reg}")

  def init(tasks) -> FairGradState:
    num_tasks = len(task_kinds(tasks))
    return FairGradState(jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32))

  def update(state: FairGradState, inputs: WeightingInputs):
    mask = labelled(inputs.counts)
    scale = frobenius_norm(inputs.gram)
    nonzero = scale > 0
    safe_scale = jnp.where(nonzero, scale, 1.0)
    normalized = inputs.gram / safe_scale
    result = solvers.alpha_fair_solve(normalized, 1.0 / alpha, state.normalized_weights, mask,
                                      reg, iterations, tol)
    solved = jnp.where(nonzero, result.weights, state.normalized_weights)
    live = mask & result.active
    weights = applied_weights(jnp.where(live, solved, 0.0), normalized, safe_scale, alpha,
                              jnp.maximum(live.sum(), 1), max_norm)
    return jnp.where(nonzero, weights, 0.0), FairGradState(solved)

  return Weighting(init, update, needs="gram")
