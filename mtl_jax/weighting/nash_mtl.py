"""Nash-MTL: multi-task learning as a bargaining game.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik and Fetaya, "Multi-Task Learning as a
Bargaining Game", ICML 2022, https://arxiv.org/abs/2202.01017; official code
github.com/AvivNavon/nash-mtl (`methods/weight_methods.py`, class NashMTL), also LibMTL's
`weighting/Nash_MTL.py` and torchjd's `NashMTL`.

The Nash bargaining solution is d = sum_i alpha_i g_i with alpha > 0 solving the paper's
optimality condition G alpha = 1 / alpha elementwise (G = J J^T; the paper writes G^T G for the
Gram of the gradient columns). The paper (Algorithm 1 and its sequence of convex problems) and
its code reach it with up to `optim_niter` = 20 cvxpy/ECOS solves on the host,
warm-started from the previous step's alpha, with G first divided by its Frobenius norm. Here
the same condition is solved in the step: it is the stationarity condition of the strictly
convex 1/2 alpha^T G alpha - sum_i log alpha_i, minimised by Newton's method with a line search
(`solvers.alpha_fair_weights` with power 1), warm-started from the previous alpha in the state,
until max_i |alpha_i (G alpha)_i - 1| <= tol (default 1e-5; the official stopping test is
||G alpha - 1/alpha||_2 < 1e-3) or `iterations` (default 50) steps.

As in the official code: G is divided by its Frobenius norm (alpha is that problem's
solution, not rescaled), alpha starts at 1, weights are recomputed every
`update_weights_every` steps (reused in between), and with `max_norm > 0` the shared update is
clipped to norm `max_norm` like torch's clip_grad_norm_: w = alpha min(1, max_norm /
(||alpha^T J|| + 1e-6)), the norm from alpha^T G alpha. Reported weights are these clipped w.
Deviations: a relative ridge `reg` (default 1e-6; G + reg diag(G), a ridge on the cosine
matrix) keeps a solution in existence for linearly dependent gradients (exactly opposite
gradients: large equal weights, a zero combination), where the official solver fails and
keeps its previous alpha; a zero gradient (G_ii <= 1e-20 max_j G_jj), which no weight can
balance, gets weight 0 and keeps its alpha; an all-zero G (nothing to bargain over) keeps the
previous alpha.

Tasks without labels get weight 0, are left out of the equation, and keep their alpha in the
state; between updates (`update_weights_every` > 1) the tasks solved for at the last update
keep its alpha, the others weight 0. Gradients of the shared parameters only
(`allows_rep=False`; LibMTL rejects rep_grad). The head parameters get their own task's
gradient (the official code weights them by alpha).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting import solvers
from mtl_jax.weighting.base import (Weighting, WeightingInputs, frobenius_norm, labelled,
                                    task_kinds)


class NashMtlState(NamedTuple):
  alpha: jnp.ndarray   # f32[T], the last solution of the normalised problem (warm start)
  active: jnp.ndarray  # bool[T], the tasks that alpha was solved for (labelled, nonzero)


def clip_to_norm(weights: jnp.ndarray, normalized: jnp.ndarray, scale: jnp.ndarray,
                 max_norm: float) -> jnp.ndarray:
  """f32[T]: w min(1, max_norm / (||w^T J|| + 1e-6)), as torch's clip_grad_norm_.

  ||w^T J||^2 = scale w^T G_n w for G = scale G_n, computed so that a huge G cannot overflow.
  """
  if max_norm <= 0:
    return weights
  norm = jnp.sqrt(scale) * jnp.sqrt(jnp.maximum(weights @ normalized @ weights, 0.0))
  return weights * jnp.minimum(1.0, max_norm / (norm + 1e-6))


def make(max_norm: float = 1.0, update_weights_every: int = 1,
         iterations: int = solvers.ALPHA_FAIR_ITERATIONS, tol: float = solvers.ALPHA_FAIR_TOL,
         reg: float = solvers.ALPHA_FAIR_REG) -> Weighting:
  """Nash-MTL's weights (see the module docstring).

  Args:
    max_norm: clip the shared update to this norm; 0 disables (official default 1.0).
    update_weights_every: solve every this many steps, reuse alpha in between (official 1).
    iterations: the most Newton steps per solve.
    tol: tolerance on max_i |alpha_i (G alpha)_i - 1| for the normalised G.
    reg: relative ridge, G + reg diag(G).
  """
  if max_norm < 0 or update_weights_every < 1 or iterations < 1 or not tol > 0 or reg < 0:
    raise ValueError("nash_mtl needs max_norm >= 0, update_weights_every >= 1, "
                     f"iterations >= 1, tol > 0, reg >= 0; got {max_norm}, "
                     f"{update_weights_every}, {iterations}, {tol}, {reg}")

  def init(tasks) -> NashMtlState:
    num_tasks = len(task_kinds(tasks))
    return NashMtlState(jnp.ones((num_tasks,), jnp.float32), jnp.ones((num_tasks,), bool))

  def update(state: NashMtlState, inputs: WeightingInputs):
    mask = labelled(inputs.counts)
    scale = frobenius_norm(inputs.gram)
    normalized = inputs.gram / jnp.where(scale > 0, scale, 1.0)
    solve_now = (inputs.step % update_weights_every == 0) & (scale > 0)
    solved = jax.lax.cond(
        solve_now,
        lambda: solvers.alpha_fair_solve(normalized, 1.0, state.alpha, mask, reg, iterations,
                                         tol)[:2],
        lambda: (state.alpha, state.active))
    alpha, active = solved
    weights = clip_to_norm(jnp.where(mask & active, alpha, 0.0), normalized, scale, max_norm)
    return weights, NashMtlState(alpha, active)

  return Weighting(init, update, needs="gram")
