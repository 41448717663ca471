"""CAGrad: conflict-averse gradient descent.

Liu, Liu, Jin, Stone and Liu, "Conflict-Averse Gradient Descent for Multi-task Learning",
NeurIPS 2021, https://arxiv.org/abs/2110.14048, Eq. 2 and its dual (Algorithm 1); official code
github.com/Cranial-XIX/CAGrad (`nyuv2/utils.py: cagrad`), also LibMTL's `weighting/CAGrad.py`.

With g_0 the mean gradient and g_w = sum_i w_i g_i, CAGrad solves the dual

    min_{w in simplex}  F(w) = <g_w, g_0> + c0 ||g_w||,   c0 = c ||g_0||,

and updates along d = (g_0 + c0 / ||g_w|| g_w) / r, so the effective weights are

    w_eff = (1/T + c0 / ||g_w|| w) / r,   r = 1 (rescale=0), 1 + c^2 (1), 1 + c (2).

Everything is a function of the Gram matrix: <g_w, g_0> = w^T G b (b = 1/T), ||g_w||^2 = w^T G w.
The official code solves the dual with scipy's SLSQP on the host; here it is Frank-Wolfe with
away steps (Lacoste-Julien & Jaggi, NeurIPS 2015) from w = 1/T (the official start), with the
exact line search along each segment (F restricted to a segment is a x + s sqrt(x^2 + mu^2),
minimised in closed form), stopping when the Frank-Wolfe gap <grad F, w> - min_t (grad F)_t
(an upper bound on F(w) - min F) is below `tol` ||g_0|| ||g_w||, the size of both terms of F at
w, or after `iterations` steps. The stop is scale-free: a stop relative to max_t ||g_t||^2 (as
MGDA had) ended early when ||g_w|| is small against the largest gradient, leaving d off by up
to 18% with gradient norms spanning four orders of magnitude (tests/test_weighting_cagrad.py).
The official code also adds 1e-8 to ||g_0||^2, c0 and ||g_w||; we guard the divisions instead
(the weights are then exactly invariant to the gradients' scale).

With c = 0, d = g_0 / r = g_0 for any rescale: the mean gradient. Defaults as the official
code and LibMTL: c = 0.5 (the official NYUv2/CityScapes scripts run c = 0.4), rescale = 1.

Missing labels: tasks without labels are left out: g_0 is the mean of the labelled tasks'
gradients, w lives on their simplex, and they get weight 0. Degenerate inputs: a zero g_w
(then F = 0 there) gives d = g_0; exactly opposite gradients give g_0 = 0, hence c0 = 0 and
d = 0. Head gradients are not weighted. Not allowed in the representation mode (LibMTL
refuses it too).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds

RESCALES = (0, 1, 2)


class CagradState(NamedTuple):
  dual_weights: jnp.ndarray  # f32[T], the last step's dual solution w (for inspection)


def _segment_step(a, big_a, big_b, big_c, c0, max_step):
  """argmin over [0, max_step] of a x + c0 sqrt(A + 2 B x + C x^2) (convex in x)."""
  tiny = jnp.finfo(jnp.float32).tiny
  flat = big_c <= tiny
  safe_c = jnp.where(flat, 1.0, big_c)
  slope = c0 * jnp.sqrt(safe_c)                                   # s
  mu = jnp.sqrt(jnp.maximum(big_a * safe_c - big_b**2, 0.0)) / safe_c
  interior = jnp.abs(a) < slope
  x = -a * mu / jnp.sqrt(jnp.where(interior, slope**2 - a**2, 1.0))
  step = jnp.where(interior, x - big_b / safe_c, jnp.where(a < 0, max_step, 0.0))
  return jnp.where(flat, 0.0, jnp.clip(step, 0.0, max_step))


def _objective_gradient(gram, w, gram_b, c0):
  """grad F(w) = G b + c0 G w / ||g_w|| (G b where g_w = 0)."""
  gram_w = gram @ w
  norm = jnp.sqrt(jnp.maximum(w @ gram_w, 0.0))
  return gram_b + jnp.where(norm > 0, c0 / jnp.where(norm > 0, norm, 1.0), 0.0) * gram_w


def dual_weights(gram: jnp.ndarray, c0: jnp.ndarray, mask: jnp.ndarray, iterations: int,
                 tol: float) -> jnp.ndarray:
  """f32[T]: argmin over the simplex of the labelled tasks of <g_w, g_0> + c0 ||g_w||."""
  num_tasks = gram.shape[0]
  eye = jnp.eye(num_tasks, dtype=gram.dtype)
  b = jnp.where(mask, 1.0, 0.0) / jnp.maximum(mask.sum(), 1)
  gram_b = gram @ b
  big = jnp.finfo(gram.dtype).max
  norm_g0 = jnp.sqrt(jnp.maximum(b @ gram_b, 0.0))

  def converged(w):
    """The Frank-Wolfe gap (a bound on F(w) - min F) is below tol ||g_0|| ||g_w||, the scale of
    both terms of F at w: relative to the problem's own size, not to the largest gradient."""
    grad = _objective_gradient(gram, w, gram_b, c0)
    gap = grad @ w - jnp.min(jnp.where(mask, grad, big))
    return gap <= tol * norm_g0 * jnp.sqrt(jnp.maximum(w @ gram @ w, 0.0))

  def step(carry):
    i, w = carry
    grad = _objective_gradient(gram, w, gram_b, c0)
    toward = jnp.argmin(jnp.where(mask, grad, big))
    away = jnp.argmax(jnp.where(mask & (w > 0), grad, -big))
    use_away = (grad[away] - grad @ w > grad @ w - grad[toward]) & (w[away] < 1.0)
    direction = jnp.where(use_away, w - eye[away], eye[toward] - w)
    max_step = jnp.where(use_away, w[away] / jnp.maximum(1.0 - w[away], 1e-30), 1.0)
    gram_u = gram @ direction
    x = _segment_step(direction @ gram_b, w @ gram @ w, w @ gram_u, direction @ gram_u, c0,
                      max_step)
    new_w = w + x * direction
    new_w = jnp.where(use_away & (x >= max_step), new_w.at[away].set(0.0), new_w)
    new_w = jnp.where(mask, jnp.maximum(new_w, 0.0), 0.0)
    return i + 1, new_w / jnp.maximum(new_w.sum(), 1e-30)

  keep_going = lambda carry: (carry[0] < iterations) & ~converged(carry[1])
  _, w = jax.lax.while_loop(keep_going, step, (jnp.asarray(0, jnp.int32), b))
  return w


def cagrad_weights(gram: jnp.ndarray, mask: jnp.ndarray, c: float, rescale: int,
                   iterations: int, tol: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(effective weights f32[T] of d, the dual solution w f32[T])."""
  b = jnp.where(mask, 1.0, 0.0) / jnp.maximum(mask.sum(), 1)
  c0 = c * jnp.sqrt(jnp.maximum(b @ gram @ b, 0.0))  # c ||g_0||
  w = dual_weights(gram, c0, mask, iterations, tol)
  norm_w = jnp.sqrt(jnp.maximum(w @ gram @ w, 0.0))
  lam = jnp.where(norm_w > 0, c0 / jnp.where(norm_w > 0, norm_w, 1.0), 0.0)
  divisor = {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]
  return (b + lam * w) / divisor, w


def make(c: float = 0.5, rescale: int = 1, iterations: int = 100,
         tol: float = 1e-6) -> Weighting:
  """CAGrad's effective task weights (see the module docstring).

  Args:
    c: the conflict-aversion radius, relative to ||g_0|| (official `alpha`, LibMTL `calpha`).
    rescale: 0 (d as is), 1 (d / (1 + c^2), the official default), 2 (d / (1 + c)).
    iterations: the most Frank-Wolfe steps of the dual solve.
    tol: the dual solve's Frank-Wolfe gap tolerance, relative to ||g_0|| ||g_w||.
  """
  if not c >= 0 or rescale not in RESCALES or iterations < 1 or not tol >= 0:
    raise ValueError(f"cagrad needs c >= 0, rescale in {RESCALES}, iterations >= 1, tol >= 0; "
                     f"got {c}, {rescale}, {iterations}, {tol}")

  def init(tasks) -> CagradState:
    return CagradState(jnp.zeros((len(task_kinds(tasks)),), jnp.float32))

  def update(state: CagradState, inputs: WeightingInputs):
    del state
    weights, w = cagrad_weights(inputs.gram, labelled(inputs.counts), c, rescale, iterations,
                                tol)
    return weights, CagradState(w)

  return Weighting(init, update, needs="gram", allows_rep=False)
