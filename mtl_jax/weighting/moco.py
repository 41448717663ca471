"""MoCo: multi-objective gradient correction with tracked task gradients.

Fernando, Shen, Liu, Chaudhury, Murugesan and Chen, "Mitigating Gradient Bias in Multi-objective
Learning: A Provably Convergent Approach", ICLR 2023, https://openreview.net/forum?id=dLAYGdKTi2,
Algorithm 1. LibMTL's `weighting/MoCo.py` follows the authors' code (shared with LibMTL).

Tracking variables y_i (one per task, shaped like a task gradient) and weights lambda on the
simplex. At update k = 1, 2, ... with step sizes beta_k = beta / k^beta_sigma and
gamma_k = gamma / k^gamma_sigma:

    h_i        = g_i / (||g_i|| + 1e-8) * L_i             (normalize=True, the authors' code)
    y_i       <- y_i - beta_k (y_i - h_i)                  (Algorithm 1: track the gradients)
    lambda    <- Pi_simplex(lambda - gamma_k (Y Y^T + rho I) lambda)
    direction  = Y^T lambda = sum_i lambda_i y_i

The direction is not a combination of this step's gradients, so `update` returns a
`Direction`; its weights, logged as "weight/<task>", are lambda: the weights of the tracked
gradients y_i. Deviation from LibMTL: the paper's projection onto the simplex (Algorithm 1);
LibMTL takes softmax(lambda - gamma_k (...) lambda) instead.

Needs "grads": y lives in the state, T times the size of the shared parameters (float32), and
Y Y^T is one more T x T Gram matrix over them. `init(tasks, grads_like=...)` allocates y from a
pytree shaped like `inputs.grads` ([T, ...] leaves, arrays or jax.ShapeDtypeStruct); without it
the state has no y and `update` raises. Not allowed in the representation mode (as in LibMTL):
the gradients of the representation of different batches belong to different examples, so a
moving average over steps has no meaning there.

Missing labels: a task without labels keeps its y_i and its lambda_i and gets weight 0; the
other tasks' lambda moves on the face of the simplex that keeps it fixed
(`solvers.simplex_face_point`), and the direction's weights are that face's point.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import (Direction, Weighting, WeightingInputs, combine,
                                    gradient_buffers, gram_matrix, labelled, require_buffers,
                                    scale_rows, task_kinds, track)
from mtl_jax.weighting.solvers import project_simplex, simplex_face_point

NORM_EPS = 1e-8  # in g_i / (||g_i|| + eps), as the authors' code


class MoCoState(NamedTuple):
  tracking: Any         # [T, ...] pytree like inputs.grads: y_i (None until given grads_like)
  lambdas: jnp.ndarray  # f32[T], on the simplex
  count: jnp.ndarray    # i32[], updates so far


def make(beta: float = 0.5, beta_sigma: float = 0.5, gamma: float = 0.1,
         gamma_sigma: float = 0.5, rho: float = 0.0, normalize: bool = True) -> Weighting:
  """MoCo's direction (see the module docstring). Defaults: LibMTL's (the authors' code).

  Args:
    beta, beta_sigma: the tracking step size beta / k^beta_sigma.
    gamma, gamma_sigma: lambda's step size gamma / k^gamma_sigma.
    rho: the l2 regularisation of lambda's update.
    normalize: track g_i / ||g_i|| * L_i (the authors' code) rather than g_i.
  """
  if not 0 < beta <= 1 or beta_sigma < 0 or gamma <= 0 or gamma_sigma < 0 or rho < 0:
    raise ValueError(f"moco needs 0 < beta <= 1, gamma > 0, beta_sigma, gamma_sigma, rho >= 0; "
                     f"got beta={beta}, beta_sigma={beta_sigma}, gamma={gamma}, "
                     f"gamma_sigma={gamma_sigma}, rho={rho}")

  def init(tasks, grads_like: Any = None) -> MoCoState:
    num_tasks = len(task_kinds(tasks))
    return MoCoState(gradient_buffers(grads_like, num_tasks, "moco"),
                     jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32),
                     jnp.zeros((), jnp.int32))

  def update(state: MoCoState, inputs: WeightingInputs):
    require_buffers(state.tracking, "moco")
    has_labels = labelled(inputs.counts)
    k = (state.count + 1).astype(jnp.float32)
    scales = jnp.ones_like(inputs.losses)
    if normalize:
      norms = jnp.sqrt(jnp.maximum(jnp.diag(inputs.gram), 0.0))
      scales = inputs.losses / (norms + NORM_EPS)
    targets = scale_rows(jnp.where(has_labels, scales, 0.0), inputs.grads)
    tracking = track(state.tracking, targets, jnp.where(has_labels, beta / k**beta_sigma, 0.0))
    tracked_gram = gram_matrix(tracking)
    mu, mass = simplex_face_point(state.lambdas, has_labels)
    step = gamma / k**gamma_sigma * (tracked_gram @ mu + rho * mu)
    mu = project_simplex(mu - step, has_labels)
    lambdas = jnp.where(has_labels, mass * mu, state.lambdas)
    direction = combine(mu, tracking)
    return Direction(direction, mu), MoCoState(tracking, lambdas, state.count + 1)

  return Weighting(init, update, needs="grads", allows_rep=False, grad_state=True)
