"""Small JAX solvers shared by the gradient methods; all jittable, with static iteration caps.

- `project_simplex(v, mask)`: Euclidean projection onto the probability simplex (over the
  tasks where `mask` is True).
- `min_norm_weights(gram, ...)`: the convex-combination weights of the minimum-norm point of
  the convex hull of the task gradients, from their Gram matrix alone (Frank-Wolfe, as MGDA's
  Algorithm 2, with away steps by default).

Append new solvers below with their own docstrings; keep each function small and pure.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

MIN_NORM_ITERATIONS = 250  # MGDA's official MinNormSolver.MAX_ITER
MIN_NORM_TOL = 1e-6


def _as_mask(mask, size: int) -> jnp.ndarray:
  """bool[T]: `mask`, or all True when None."""
  return jnp.ones((size,), bool) if mask is None else jnp.asarray(mask, bool)


def project_simplex(v: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """f32[T]: argmin_{w in simplex} ||w - v||, the simplex over the entries where `mask` is True.

  Sort-based algorithm of Duchi, Shalev-Shwartz, Singer and Chandra, "Efficient Projections
  onto the l1-Ball for Learning in High Dimensions", ICML 2008, Fig. 1: w = max(v - theta, 0)
  with theta chosen so that the entries sum to 1. Entries outside `mask` are 0; with no entry
  in `mask` the result is all zeros.

  Args:
    v: f32[T], the point to project.
    mask: bool[T] or None (all entries).
  """
  v = jnp.asarray(v, jnp.float32)
  mask = _as_mask(mask, v.shape[0])
  num_valid = mask.sum()
  lowest = jnp.finfo(v.dtype).min
  u = -jnp.sort(-jnp.where(mask, v, lowest))  # descending, masked-out entries last
  k = jnp.arange(1, v.shape[0] + 1)
  cumulative = jnp.cumsum(jnp.where(k <= num_valid, u, 0.0))
  active = (k <= num_valid) & (u - (cumulative - 1.0) / k > 0)
  rho = jnp.maximum(active.sum(), 1)  # the active entries form a prefix of the sorted order
  theta = (cumulative[rho - 1] - 1.0) / rho
  return jnp.where(mask, jnp.maximum(v - theta, 0.0), 0.0)


class MinNormResult(NamedTuple):
  weights: jnp.ndarray     # f32[T], on the simplex over the masked tasks (0 elsewhere)
  gap: jnp.ndarray         # f32[], Frank-Wolfe duality gap: ||d||^2 - min_r <d, g_r> >= 0
  iterations: jnp.ndarray  # i32[], iterations run


def _min_norm_step(gram: jnp.ndarray, alpha: jnp.ndarray, mask: jnp.ndarray,
                   away_steps: bool) -> jnp.ndarray:
  """One (away-step) Frank-Wolfe step with exact line search on f(a) = a^T G a."""
  g_alpha = gram @ alpha           # <g_r, d> for every task r, d = sum_t alpha_t g_t
  norm = alpha @ g_alpha           # ||d||^2
  big = jnp.finfo(gram.dtype).max
  toward = jnp.argmin(jnp.where(mask, g_alpha, big))
  # Frank-Wolfe direction e_t - alpha: slope <d, g_t> - ||d||^2, curvature ||g_t - d||^2.
  fw_slope = g_alpha[toward] - norm
  fw_curve = gram[toward, toward] - 2.0 * g_alpha[toward] + norm
  fw_max = 1.0
  if away_steps:
    # Away direction alpha - e_a from the support vertex a most aligned with d.
    away = jnp.argmax(jnp.where(mask & (alpha > 0), g_alpha, -big))
    aw_slope = norm - g_alpha[away]
    aw_curve = gram[away, away] - 2.0 * g_alpha[away] + norm
    aw_max = alpha[away] / jnp.maximum(1.0 - alpha[away], jnp.finfo(gram.dtype).tiny)
    use_away = (aw_slope < fw_slope) & (alpha[away] < 1.0)
    slope = jnp.where(use_away, aw_slope, fw_slope)
    curve = jnp.where(use_away, aw_curve, fw_curve)
    max_step = jnp.where(use_away, aw_max, fw_max)
    direction = jnp.where(use_away, alpha - jax.nn.one_hot(away, alpha.shape[0]),
                          jax.nn.one_hot(toward, alpha.shape[0]) - alpha)
  else:
    use_away = False
    slope, curve, max_step = fw_slope, fw_curve, fw_max
    direction = jax.nn.one_hot(toward, alpha.shape[0]) - alpha
  # Exact line search on the quadratic, clipped to the feasible segment; a flat direction
  # (curvature 0, e.g. parallel equal gradients) takes no step.
  step = jnp.where(curve > 0, -slope / jnp.where(curve > 0, curve, 1.0), 0.0)
  step = jnp.clip(step, 0.0, max_step)
  new_alpha = alpha + step * direction
  if away_steps:  # a drop step removes vertex `away` exactly
    new_alpha = jnp.where(use_away & (step >= max_step),
                          new_alpha.at[away].set(0.0), new_alpha)
  new_alpha = jnp.where(mask, jnp.maximum(new_alpha, 0.0), 0.0)
  return new_alpha / jnp.maximum(new_alpha.sum(), jnp.finfo(gram.dtype).tiny)


def _duality_gap(gram: jnp.ndarray, alpha: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """f32[]: ||d||^2 - min_r <d, g_r> over masked r, an upper bound on ||d||^2 - min ||.||^2."""
  g_alpha = gram @ alpha
  return alpha @ g_alpha - jnp.min(jnp.where(mask, g_alpha, jnp.finfo(gram.dtype).max))


def min_norm_solve(gram: jnp.ndarray, mask: jnp.ndarray | None = None,
                   iterations: int = MIN_NORM_ITERATIONS, tol: float = MIN_NORM_TOL,
                   away_steps: bool = True) -> MinNormResult:
  """`min_norm_weights` with its duality gap and iteration count (see there)."""
  gram = jnp.asarray(gram, jnp.float32)
  num_tasks = gram.shape[0]
  mask = _as_mask(mask, num_tasks)
  alpha = jnp.where(mask, 1.0, 0.0) / jnp.maximum(mask.sum(), 1)  # Algorithm 2: alpha = 1/T
  scale = jnp.max(jnp.where(mask, jnp.diag(gram), 0.0))  # max_t ||g_t||^2
  threshold = tol * scale

  def keep_going(carry):
    i, alpha = carry
    return (i < iterations) & (_duality_gap(gram, alpha, mask) > threshold)

  def body(carry):
    i, alpha = carry
    return i + 1, _min_norm_step(gram, alpha, mask, away_steps)

  count, alpha = jax.lax.while_loop(keep_going, body, (jnp.asarray(0, jnp.int32), alpha))
  return MinNormResult(alpha, jnp.maximum(_duality_gap(gram, alpha, mask), 0.0), count)


def min_norm_weights(gram: jnp.ndarray, mask: jnp.ndarray | None = None,
                     iterations: int = MIN_NORM_ITERATIONS, tol: float = MIN_NORM_TOL,
                     away_steps: bool = True) -> jnp.ndarray:
  """f32[T]: alpha on the simplex minimising ||sum_t alpha_t g_t||^2 = alpha^T G alpha.

  Frank-Wolfe over the simplex as in Sener & Koltun, "Multi-Task Learning as Multi-Objective
  Optimization", NeurIPS 2018, Algorithm 2: start at alpha = 1/T, move toward the vertex t
  with the smallest <g_t, d> (d = sum alpha_t g_t) with the exact line search of the
  two-point min-norm problem. Deviations: the step is the exact minimiser clipped to [0, 1]
  (the official MinNormSolver clamps to 0.001/0.999); with `away_steps` (default) the solver
  may also move away from the support vertex most aligned with d (Lacoste-Julien & Jaggi,
  "On the Global Linear Convergence of Frank-Wolfe Optimization Variants", NeurIPS 2015,
  Algorithm 1), which converges linearly where plain Frank-Wolfe zig-zags. It stops when the
  Frank-Wolfe duality gap ||d||^2 - min_t <d, g_t> (>= ||d||^2 - ||d*||^2 >= ||d - d*||^2)
  falls below tol * max_t ||g_t||^2, or after `iterations` steps (a lax.while_loop).

  Tasks outside `mask` are left out (weight 0): without this a zero gradient of an
  unlabelled task would be the min-norm point. With no task in `mask` the weights are 0.
  All-zero gradients give the starting point 1/T. Called under `jax.jit`, `iterations`,
  `tol` and `away_steps` are static.

  Args:
    gram: f32[T, T], G = J J^T.
    mask: bool[T], the tasks to combine (None: all).
    iterations: the most Frank-Wolfe steps.
    tol: relative duality-gap tolerance.
    away_steps: whether to take away steps (False: the paper's plain Frank-Wolfe).
  """
  return min_norm_solve(gram, mask, iterations, tol, away_steps).weights


def simplex_face_point(weights: jnp.ndarray,
                       mask: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(mu f32[T], mass f32[]): the `mask` entries of `weights` rescaled to sum 1, and their sum.

  For methods that keep weights on the simplex across steps (MoCo, MoDo, SDMGrad) and move
  only the tasks with labels in the batch: a step on mu over the simplex of the masked tasks,
  written back as `jnp.where(mask, mass * new_mu, weights)`, is the projected step on the face
  that keeps the other tasks' entries fixed (projecting onto {x >= 0, sum x = mass} is mass
  times the projection of x / mass onto the simplex). mu is 0 outside the mask, and uniform
  over the mask when the masked entries sum to 0.

  Args:
    weights: f32[T], non-negative.
    mask: bool[T], the tasks to move.
  """
  weights = jnp.where(mask, jnp.asarray(weights, jnp.float32), 0.0)
  mass = weights.sum()
  uniform = jnp.where(mask, 1.0, 0.0) / jnp.maximum(mask.sum(), 1)
  mu = jnp.where(mass > 0, weights / jnp.where(mass > 0, mass, 1.0), uniform)
  return mu, mass
