"""SDMGrad: stochastic direction-oriented multi-objective gradient descent.

Xiao, Ban and Ji, "Direction-oriented Multi-objective Learning: Simple and Provable Stochastic
Algorithms", NeurIPS 2023, https://arxiv.org/abs/2305.18409, Algorithm 1; official code
github.com/OptMN-Lab/sdmgrad (the paper links ml-opt-lab/sdmgrad; `methods/weight_methods.py`,
class SDMGrad), also LibMTL's `weighting/SDMGrad.py`.

The direction is d = (J^T w + lambda g0) / (1 + lambda), with g0 = J^T 1/T the mean gradient
(the target direction) and w on the simplex minimising (1/2) ||J^T w||^2 + lambda <J^T w, g0>,
i.e. with the Gram matrix G = J J^T,

    min_{w in simplex}  (1/2) w^T G w + lambda w^T G 1/T,

solved by `niter` projected gradient steps with heavy-ball momentum, as the official code's
torch SGD (lr 10, momentum 0.5, a fresh momentum buffer each update; grad G w + lambda G 1/T;
projection onto the simplex after every step), on G scaled by s^2, s = mean_i
sqrt(G_ii + 1e-4) (official). w is warm-started from the previous update (kept in the state,
1/T at the start). The paper's weights are therefore p = (w + lambda/T) / (1 + lambda): fully
through G, no J needed.

Scale, as the official code: its `overwrite_grad` multiplies d by T "to match the sum loss",
and its `backward` then clips the shared update with clip_grad_norm_(max_norm) (its trainers'
--max_norm, default 1.0). By default (`scale_by_tasks=True`, `max_norm=1.0`) the weights are
therefore T p min(1, max_norm / (||T p^T J|| + 1e-6)), the norm from G; these are the reported
weights. T counts the labelled tasks. `scale_by_tasks=False, max_norm=0` gives the paper's d
itself, as LibMTL and torchjd (which do neither). Head gradients are not weighted or clipped
(the official code clips the shared parameters only).

Deviation: the paper samples three independent batches (two for an unbiased estimate of G, one
for the direction); we have one batch, so all three are J (as for MoDo). LibMTL differs from
the official code in the inner learning rate (5) and the scale (negative diagonal entries
clipped, s^2 + 1e-8). Allowed in the representation mode (G of the representation gradients,
as MGDA-UB; LibMTL refuses it because of the three batches); there the clip bounds the norm of
the combined representation gradient, not of the parameter update (the official code has no
such mode; pass max_norm=0 to leave clipping to the optimizer).

Missing labels: a task without labels gets weight 0 and keeps its w_i; G, s, g0 = mean over the
labelled tasks, and w moves on the face of the simplex that keeps the others fixed
(`solvers.simplex_face_point`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import (Weighting, WeightingInputs, clip_factor, labelled,
                                    task_kinds)
from mtl_jax.weighting.solvers import project_simplex, simplex_face_point

SCALE_EPS = 1e-4  # s = mean_i sqrt(G_ii + eps), as the official code


class SDMGradState(NamedTuple):
  weights: jnp.ndarray  # f32[T], w on the simplex (warm start)


def gram_scale(gram: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """f32[]: s^2, s = mean over the masked tasks of sqrt(G_ii + SCALE_EPS); the solver sees
  G / s^2."""
  roots = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0) + SCALE_EPS)
  return (jnp.where(mask, roots, 0.0).sum() / jnp.maximum(mask.sum(), 1))**2


def solve_weights(gram: jnp.ndarray, start: jnp.ndarray, mask: jnp.ndarray, lamda: float,
                  niter: int, lr: float, momentum: float) -> jnp.ndarray:
  """f32[T]: w after `niter` projected heavy-ball steps on (1/2) w^T G w + lamda w^T G mean.

  The mean is over the tasks in `mask`; w stays on the simplex over them (0 elsewhere).
  """
  mean = jnp.where(mask, 1.0, 0.0) / jnp.maximum(mask.sum(), 1)
  target = lamda * gram @ mean

  def body(i, carry):
    w, buffer = carry
    grad = gram @ w + target
    buffer = jnp.where(i == 0, grad, momentum * buffer + grad)  # torch SGD's momentum buffer
    return project_simplex(w - lr * buffer, mask), buffer

  w, _ = jax.lax.fori_loop(0, niter, body, (start, jnp.zeros_like(start)))
  return w


def make(lamda: float = 0.3, niter: int = 20, lr: float = 10.0, momentum: float = 0.5,
         scale_by_tasks: bool = True, max_norm: float = 1.0) -> Weighting:
  """SDMGrad's weights (see the module docstring). Defaults: the official code's.

  Args:
    lamda: the regularisation toward the mean gradient (official run scripts: 0.3 for NYUv2
      and CityScapes, 0.6 for Metaworld); 0 is MGDA solved by projected gradient.
    niter: projected gradient steps per update (static).
    lr, momentum: the inner steps' learning rate and heavy-ball momentum.
    scale_by_tasks: multiply the update by the number of labelled tasks (official).
    max_norm: clip the shared update to this norm; 0 disables (official 1.0).
  """
  if lamda < 0 or niter < 1 or not lr > 0 or not 0 <= momentum < 1 or max_norm < 0:
    raise ValueError(f"sdmgrad needs lamda >= 0, niter >= 1, lr > 0, 0 <= momentum < 1, "
                     f"max_norm >= 0; got lamda={lamda}, niter={niter}, lr={lr}, "
                     f"momentum={momentum}, max_norm={max_norm}")
  niter = int(niter)

  def init(tasks) -> SDMGradState:
    num_tasks = len(task_kinds(tasks))
    return SDMGradState(jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32))

  def update(state: SDMGradState, inputs: WeightingInputs):
    has_labels = labelled(inputs.counts)
    start, mass = simplex_face_point(state.weights, has_labels)
    scale = gram_scale(inputs.gram, has_labels)
    scaled = inputs.gram / scale
    w = solve_weights(scaled, start, has_labels, lamda, niter, lr, momentum)
    mean = jnp.where(has_labels, 1.0, 0.0) / jnp.maximum(has_labels.sum(), 1)
    weights = (w + lamda * mean) / (1.0 + lamda)
    if scale_by_tasks:
      weights = weights * has_labels.sum()
    weights = weights * clip_factor(scale * (weights @ scaled @ weights), max_norm)
    return weights, SDMGradState(jnp.where(has_labels, mass * w, state.weights))

  return Weighting(init, update, needs="gram", allows_rep=True)
