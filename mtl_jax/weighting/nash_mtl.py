"""Nash-MTL: multi-task learning as a bargaining game.

Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik and Fetaya, "Multi-Task Learning as a
Bargaining Game", ICML 2022, https://arxiv.org/abs/2202.01017; official code
github.com/AvivNavon/nash-mtl (`methods/weight_methods.py`, class NashMTL), also LibMTL's
`weighting/Nash_MTL.py` and torchjd's `NashMTL`.

The Nash bargaining solution is d = sum_i alpha_i g_i with alpha > 0 solving the paper's
optimality condition G alpha = 1 / alpha elementwise (G = J J^T; the paper writes G^T G for the
Gram of the gradient columns). The paper (Algorithm 1 and its sequence of convex problems) and
its code reach it with up to `optim_niter` = 20 cvxpy/ECOS solves on the host, warm-started
from the previous step's alpha, stopping early when alpha moves less than 1e-6 (its other
test, ||G_n alpha - 1/alpha|| < 1e-3, mixes the normalised G_n below with the raw alpha).
Here the condition for G_n is solved in the step: it is the stationarity condition of the
strictly convex 1/2 a^T G_n a - sum_i log a_i, minimised by Newton's method with a line search
(`solvers.alpha_fair_weights` with power 1), warm-started from the previous a in the state,
until max_i |a_i (G_n a)_i - 1| <= tol (default 1e-5) or `iterations` (default 50) steps.

Scale, as in the official code, LibMTL and torchjd: the solver sees G_n = G / F, F = ||G||_F,
while the weights satisfy the paper's condition on the raw G (the official cvxpy problem
constrains F alpha_i (G_n alpha)_i >= 1). If G_n a = 1 / a, then alpha = a / sqrt(F) solves
G alpha = 1 / alpha, so the weights are a / sqrt(F); a, the scale-free solution, is kept in
the state as the next solve's warm start (the official code warm-starts from alpha itself). At
the solution alpha^T G alpha = sum_i alpha_i (G alpha)_i = T: the unclipped update alpha^T J
has norm sqrt(T) whatever the gradients' scale, and the weights scale as 1 / sqrt(c) when G is
scaled by c.

As in the official code alpha starts at 1, weights are recomputed every `update_weights_every`
steps and reused in between (that solve's a / sqrt(F), as the official code reuses its alpha),
and with `max_norm > 0` the shared update is clipped to norm `max_norm` like torch's
clip_grad_norm_: w = alpha min(1, max_norm / (||alpha^T J|| + 1e-6)), the norm from
alpha^T G alpha on the current G. With the default max_norm = 1 the update therefore has norm
1 whenever two or more tasks bargain. Reported weights are these clipped w.

Deviations: a relative ridge `reg` (default 1e-6; G + reg diag(G), a ridge on the cosine
matrix) keeps a solution in existence for linearly dependent gradients (exactly opposite
gradients: large equal weights, a zero combination), where the official solver fails and
keeps its previous alpha; a zero gradient (G_ii <= 1e-20 max_j G_jj), which no weight can
balance, gets weight 0 and keeps its a; an all-zero G (nothing to bargain over) keeps the
previous weights.

Tasks without labels get weight 0, are left out of the equation, and keep their a in the
state; between updates (`update_weights_every` > 1) the tasks solved for at the last update
keep its weights, the others weight 0. Gradients of the shared parameters only
(`allows_rep=False`; LibMTL rejects rep_grad). The head parameters get their own task's
gradient (the official code weights them by alpha).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting import solvers
from mtl_jax.weighting.base import (Weighting, WeightingInputs, clip_factor, frobenius_norm,
                                    labelled, task_kinds)


class NashMtlState(NamedTuple):
  alpha: jnp.ndarray   # f32[T], a: the last solution for G / ||G||_F (warm start)
  active: jnp.ndarray  # bool[T], the tasks that a was solved for (labelled, nonzero)
  scale: jnp.ndarray   # f32[], ||G||_F at the last solve: the weights are a / sqrt(scale)


def make(max_norm: float = 1.0, update_weights_every: int = 1,
         iterations: int = solvers.ALPHA_FAIR_ITERATIONS, tol: float = solvers.ALPHA_FAIR_TOL,
         reg: float = solvers.ALPHA_FAIR_REG) -> Weighting:
  """Nash-MTL's weights (see the module docstring).

  Args:
    max_norm: clip the shared update to this norm; 0 disables (official default 1.0).
    update_weights_every: solve every this many steps, reuse the weights in between (official 1).
    iterations: the most Newton steps per solve.
    tol: tolerance on max_i |a_i (G_n a)_i - 1|, the same for the raw G and alpha.
    reg: relative ridge, G + reg diag(G).
  """
  if max_norm < 0 or update_weights_every < 1 or iterations < 1 or not tol > 0 or reg < 0:
    raise ValueError("nash_mtl needs max_norm >= 0, update_weights_every >= 1, "
                     f"iterations >= 1, tol > 0, reg >= 0; got {max_norm}, "
                     f"{update_weights_every}, {iterations}, {tol}, {reg}")

  def init(tasks) -> NashMtlState:
    num_tasks = len(task_kinds(tasks))
    return NashMtlState(jnp.ones((num_tasks,), jnp.float32), jnp.ones((num_tasks,), bool),
                        jnp.ones((), jnp.float32))

  def update(state: NashMtlState, inputs: WeightingInputs):
    mask = labelled(inputs.counts)
    scale = frobenius_norm(inputs.gram)
    safe_scale = jnp.where(scale > 0, scale, 1.0)
    normalized = inputs.gram / safe_scale
    solve_now = (inputs.step % update_weights_every == 0) & (scale > 0)
    alpha, active, solved_scale = jax.lax.cond(
        solve_now,
        lambda: (*solvers.alpha_fair_solve(normalized, 1.0, state.alpha, mask, reg, iterations,
                                           tol)[:2], safe_scale),
        lambda: (state.alpha, state.active, state.scale))
    a = jnp.where(mask & active, alpha, 0.0)
    # ||w^T J||^2 = w^T G w with w = a / sqrt(solved_scale): scale-free when solved now.
    squared_norm = (scale / solved_scale) * (a @ normalized @ a)
    weights = a / jnp.sqrt(solved_scale) * clip_factor(squared_norm, max_norm)
    return weights, NashMtlState(alpha, active, solved_scale)

  return Weighting(init, update, needs="gram")
