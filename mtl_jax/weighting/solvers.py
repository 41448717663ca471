"""Small JAX solvers shared by the gradient methods; all jittable, with static iteration caps.

- `project_simplex(v, mask)`: Euclidean projection onto the probability simplex (over the
  tasks where `mask` is True).
- `min_norm_weights(gram, ...)`: the convex-combination weights of the minimum-norm point of
  the convex hull of the task gradients, from their Gram matrix alone (Frank-Wolfe, as MGDA's
  Algorithm 2, with away steps by default).
- `dual_cone_weights(quad, lower, ...)`: argmin_{v >= lower} v^T Q v, the weights of a
  projection onto the dual cone of the task gradients (UPGrad, DualProj), by an active-set
  method; `regularized_gram(gram, ...)` makes Q from G as torchjd does.
- `alpha_fair_weights(gram, power, init, ...)`: w > 0 with (G w)_i = w_i^(-power) (Nash-MTL,
  FairGrad), by Newton's method with a line search.

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

  def keep_going(carry):
    i, alpha, moved = carry
    gap = _duality_gap(gram, alpha, mask)
    return (i < iterations) & moved & (gap > tol * (alpha @ gram @ alpha))  # tol ||d||^2

  def body(carry):
    i, alpha, _ = carry
    new_alpha = _min_norm_step(gram, alpha, mask, away_steps)
    return i + 1, new_alpha, jnp.any(new_alpha != alpha)

  start = (jnp.asarray(0, jnp.int32), alpha, jnp.asarray(True))
  count, alpha, _ = jax.lax.while_loop(keep_going, body, start)
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
  falls below tol * ||d||^2, so that ||d - d*|| <= sqrt(tol) ||d|| whatever the gradients'
  scales; when a step leaves alpha unchanged in float32 (rounding in G alpha floors the gap near
  eps max_s sum_t |G_st| alpha_t, which can exceed tol ||d||^2 when the gradients' norms span
  orders of magnitude); or after `iterations` steps (a lax.while_loop). Both tests are
  scale-free: scaling G scales the gap and ||d||^2 alike. (A stop relative to max_t ||g_t||^2
  ends far from d* when ||d*|| is small against the largest gradient.)

  Tasks outside `mask` are left out (weight 0): without this a zero gradient of an
  unlabelled task would be the min-norm point. With no task in `mask` the weights are 0.
  All-zero gradients give the starting point 1/T. Called under `jax.jit`, `iterations`,
  `tol` and `away_steps` are static.

  Args:
    gram: f32[T, T], G = J J^T.
    mask: bool[T], the tasks to combine (None: all).
    iterations: the most Frank-Wolfe steps.
    tol: duality-gap tolerance relative to ||d||^2.
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


DUAL_CONE_TOL = 1e-6


def regularized_gram(gram: jnp.ndarray, norm_eps: float, reg_eps: float) -> jnp.ndarray:
  """f32[T, T]: G / trace(G) (0 if trace(G) < norm_eps) + reg_eps I, as torchjd's
  `regularize(normalize(G, norm_eps), reg_eps)`: the positive definite Q of
  `dual_cone_weights` for UPGrad and DualProj."""
  gram = jnp.asarray(gram, jnp.float32)
  trace = jnp.trace(gram)
  small = trace < norm_eps
  normalized = jnp.where(small, 0.0, gram / jnp.where(small | (trace <= 0), 1.0, trace))
  return normalized + reg_eps * jnp.eye(gram.shape[0], dtype=gram.dtype)


class DualConeResult(NamedTuple):
  weights: jnp.ndarray     # f32[T], v with v >= lower
  iterations: jnp.ndarray  # i32[], active-set iterations run
  converged: jnp.ndarray   # bool[], whether the KKT conditions held before the cap


def dual_cone_solve(quad: jnp.ndarray, lower: jnp.ndarray, iterations: int | None = None,
                    tol: float = DUAL_CONE_TOL) -> DualConeResult:
  """`dual_cone_weights` with its iteration count and convergence flag (see there)."""
  quad = jnp.asarray(quad, jnp.float32)
  lower = jnp.asarray(lower, jnp.float32)
  num_tasks = quad.shape[0]
  cap = 4 * num_tasks + 8 if iterations is None else iterations
  eye = jnp.eye(num_tasks, dtype=quad.dtype)
  threshold = tol * jnp.max(jnp.abs(jnp.diag(quad))) * jnp.max(jnp.abs(lower))

  def keep_going(carry):
    i, _, _, done = carry
    return (i < cap) & ~done

  def body(carry):
    i, v, active, _ = carry
    free = ~active
    # Minimiser over the working set: v_A = lower_A, Q_FF v_F = -Q_FA lower_A.
    matrix = jnp.where(free[:, None] & free[None, :], quad, eye)
    rhs = jnp.where(free, -(quad @ jnp.where(active, lower, 0.0)), lower)
    target = jnp.linalg.solve(matrix, rhs)
    step = target - v
    # Blocked: walk toward the target up to the first bound crossed, and fix that coordinate.
    blocking = free & (target < lower)
    ratio = jnp.where(blocking, (lower - v) / jnp.where(blocking, step, -1.0), jnp.inf)
    first = jnp.argmin(ratio)
    blocked = blocking.any()
    v_blocked = (v + jnp.clip(ratio[first], 0.0, 1.0) * step).at[first].set(lower[first])
    # Reached: optimal if every fixed coordinate has a multiplier (Q v)_i >= 0, else free the
    # most negative one.
    multipliers = quad @ target
    worst = jnp.argmin(jnp.where(active, multipliers, jnp.inf))
    optimal = ~active.any() | (multipliers[worst] >= -threshold)
    new_v = jnp.where(blocked, v_blocked, target)
    new_active = jnp.where(blocked, active.at[first].set(True),
                           jnp.where(optimal, active, active.at[worst].set(False)))
    return i + 1, new_v, new_active, ~blocked & optimal

  start = (jnp.asarray(0, jnp.int32), lower, jnp.ones((num_tasks,), bool), jnp.asarray(False))
  count, v, _, done = jax.lax.while_loop(keep_going, body, start)
  return DualConeResult(jnp.maximum(v, lower), count, done)


def dual_cone_weights(quad: jnp.ndarray, lower: jnp.ndarray, iterations: int | None = None,
                      tol: float = DUAL_CONE_TOL) -> jnp.ndarray:
  """f32[T]: v = argmin_{v >= lower} v^T Q v, for a positive definite T x T matrix Q.

  With Q = J J^T (regularised), J^T v is the projection of J^T lower onto the dual cone
  {x : J x >= 0} of the rows of J: Quinton and Rey, "Jacobian Descent for Multi-Objective
  Optimization", 2024, https://arxiv.org/abs/2406.16232, Proposition 1 (torchjd's
  `_utils/dual_cone.py` solves it on the host with quadprog). The KKT conditions of this
  problem are Q v = mu, mu >= 0, mu_i (v_i - lower_i) = 0: the multipliers mu are the inner
  products of the projection with the rows of J, hence non-negative.

  Solver: the primal active-set method for bound constraints (Nocedal and Wright, "Numerical
  Optimization", 2nd ed., Algorithm 16.3), started at v = lower with every bound in the
  working set. Each iteration solves one T x T system for the minimiser over the working set;
  if that point is feasible and every fixed coordinate has multiplier (Q v)_i >=
  -tol * max_i Q_ii * max_i |lower_i|, it is optimal (stop); if feasible otherwise, the most
  negative multiplier's bound leaves the working set; if infeasible, the step stops at the
  first bound it crosses, which joins the working set. The method is exact up to the linear
  solves (no step size, no rate to tune) and typically ends within 2T iterations; it stops
  after `iterations` (default 4T + 8, static) in any case, always feasible. Q must be
  positive definite (add a multiple of the identity to a Gram matrix).

  Args:
    quad: f32[T, T], Q, symmetric positive definite.
    lower: f32[T], the lower bounds.
    iterations: the most active-set iterations (None: 4T + 8).
    tol: relative tolerance on the multipliers of the fixed coordinates.
  """
  return dual_cone_solve(quad, lower, iterations, tol).weights


ALPHA_FAIR_ITERATIONS = 50
ALPHA_FAIR_TOL = 1e-5
ALPHA_FAIR_REG = 1e-6
ALPHA_FAIR_ZERO = 1e-20
_ARMIJO = 1e-4
_STEP_SIZES = tuple(2.0 ** -k for k in range(30))


class AlphaFairResult(NamedTuple):
  weights: jnp.ndarray     # f32[T], w > 0 on the active tasks (the init elsewhere)
  active: jnp.ndarray      # bool[T], the masked tasks with a nonzero gradient
  residual: jnp.ndarray    # f32[], max_i |w_i^p (Q w)_i - 1| over the active tasks
  iterations: jnp.ndarray  # i32[], Newton steps run


def alpha_fair_solve(gram: jnp.ndarray, power: float, init: jnp.ndarray,
                     mask: jnp.ndarray | None = None, reg: float = ALPHA_FAIR_REG,
                     iterations: int = ALPHA_FAIR_ITERATIONS,
                     tol: float = ALPHA_FAIR_TOL) -> AlphaFairResult:
  """`alpha_fair_weights` with the active tasks, residual and iteration count (see there)."""
  gram = jnp.asarray(gram, jnp.float32)
  num_tasks = gram.shape[0]
  diagonal = jnp.diag(gram)
  active = _as_mask(mask, num_tasks) & (diagonal > ALPHA_FAIR_ZERO * jnp.max(diagonal))
  quad = jnp.where(active[:, None] & active[None, :],
                   gram + jnp.diag(reg * diagonal), 0.0)
  init = jnp.asarray(init, jnp.float32)
  w = jnp.where((init > 0) & jnp.isfinite(init), init, 1.0)
  steps = jnp.asarray(_STEP_SIZES, jnp.float32)

  def objective(w):  # f(w) for w of shape [..., T] with positive active entries
    if power == 1.0:
      potential = jnp.log(w)
    else:
      potential = w ** (1.0 - power) / (1.0 - power)
    quadratic = 0.5 * jnp.sum((w @ quad) * w, axis=-1)
    return quadratic - jnp.sum(jnp.where(active, potential, 0.0), axis=-1)

  def residual(w):  # scale-free: w_i^p (Q w)_i = 1 at the solution
    return jnp.max(jnp.where(active, jnp.abs(w ** power * (w @ quad) - 1.0), 0.0), axis=-1)

  def newton_step(w):
    grad = jnp.where(active, quad @ w - w ** -power, 0.0)
    hess = quad + jnp.diag(jnp.where(active, power * w ** (-power - 1.0), 1.0))
    delta = -jnp.linalg.solve(hess, grad)
    candidates = w + steps[:, None] * delta
    feasible = jnp.all(jnp.where(active, candidates > 0, True), axis=-1)
    candidates = jnp.where(feasible[:, None], candidates, w)
    armijo = objective(candidates) <= objective(w) + _ARMIJO * steps * (grad @ delta)
    accepted = feasible & (armijo | (residual(candidates) < residual(w)))
    moved = accepted.any()
    return jnp.where(moved, candidates[jnp.argmax(accepted)], w), moved

  def keep_going(carry):
    i, w, moved = carry
    return (i < iterations) & moved & (residual(w) > tol)

  def body(carry):
    i, w, _ = carry
    w, moved = newton_step(w)
    return i + 1, w, moved

  count, w, _ = jax.lax.while_loop(keep_going, body,
                                   (jnp.asarray(0, jnp.int32), w, jnp.asarray(True)))
  return AlphaFairResult(w, active, residual(w), count)


def alpha_fair_weights(gram: jnp.ndarray, power: float, init: jnp.ndarray,
                       mask: jnp.ndarray | None = None, reg: float = ALPHA_FAIR_REG,
                       iterations: int = ALPHA_FAIR_ITERATIONS,
                       tol: float = ALPHA_FAIR_TOL) -> jnp.ndarray:
  """f32[T]: w > 0 with (Q w)_i = w_i^(-power) for the active tasks, Q = G + reg diag(G).

  power = 1 is Nash-MTL's bargaining condition G alpha = 1/alpha (Navon et al., ICML 2022);
  power = 1/alpha is FairGrad's alpha-fair condition (Ban and Ji, ICML 2024). Both are the
  stationarity condition of the strictly convex
      f(w) = 1/2 w^T Q w - sum_i phi(w_i),  phi'(w) = w^(-power)
  (phi = log for power 1, w^(1-power)/(1-power) otherwise) over w > 0, whose minimiser is
  unique. Solver: Newton's method from `init` (warm start; non-positive or non-finite entries
  start at 1) with a backtracking line search over the steps 1, 1/2, ..., 2^-29, all tried at
  once: the longest one that keeps w > 0 and satisfies Armijo's condition (or, where float32
  rounding hides the decrease of f, lowers the residual) is taken. It stops when the
  scale-free residual max_i |w_i^power (Q w)_i - 1| <= tol, when no step is accepted, or after
  `iterations` steps (a lax.while_loop).

  The relative ridge `reg` (Q = D^1/2 (C + reg I) D^1/2 with C the cosine matrix, D = diag(G))
  keeps a solution in existence for linearly dependent gradients, where the equation alone has
  none (exactly opposite gradients: the weights grow to about reg^(-1/(1 + power)) relative to
  1/||g_i|| while their combination stays 0), and perturbs a well-conditioned solution by
  about reg / lambda_min(C) relative, whatever the gradients' norms. The active tasks are those
  in `mask` with G_ii > 1e-20 max_j G_jj; the others (a zero gradient, which no weight can
  balance) keep their `init` value and do not enter the other tasks' equations.

  Args:
    gram: f32[T, T], G = J J^T.
    power: p > 0 in (G w)_i = w_i^(-p).
    init: f32[T], the starting point.
    mask: bool[T], the tasks to solve for (None: all).
    reg: relative ridge on the diagonal of G.
    iterations: the most Newton steps.
    tol: tolerance on the scale-free residual.
  """
  return alpha_fair_solve(gram, power, init, mask, reg, iterations, tol).weights
