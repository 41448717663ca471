"""ConFIG: a conflict-free direction with equal cosine to every task gradient.

Liu, Chu, Wang and Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
Networks", ICLR 2025, https://arxiv.org/abs/2408.11104, Eq. 2; official code
github.com/tum-pbs/ConFIG (`conflictfree/grad_operator.py`: ConFIG_update with EqualWeight and
ProjectionLength), also torchjd's `ConFIG`.

With the unit gradients U = N J, N = diag(1 / ||g_i||), the direction is

    u = unit(U^+ 1),   d = (sum_i <g_i, u>) u,

U^+ the pseudo-inverse (the official default solves the same least-squares problem with
torch.linalg.lstsq). For linearly independent gradients U u is a positive multiple of 1: u
has the same positive cosine with every task gradient, and the length is the sum of the
gradients' projections on u. All of it goes through G: U^+ 1 = J^T c with
c = N C^+ 1, C = N G N the cosine matrix, so d = J^T w with

    w = c (1^T G c) / (c^T G c).

C^+ comes from the eigendecomposition of C, with eigenvalues at or below
lambda_max * T * eps_f32 treated as 0 (the numerical rank of a float32 Gram matrix; torch's
pinv of U cuts singular values at the float32 eps of U, which the squared scale of G cannot
resolve).

Degenerate inputs: a zero gradient has a zero unit row (the official nan_to_num) and weight 0;
parallel gradients give their common direction with length the sum of their norms; exactly
opposite gradients give a zero direction (weights 0: 1 lies in the null space of C). Tasks
without labels have zero rows of G and get weight 0 the same way. The state only keeps the
last weights. Gradients of the shared parameters only (`allows_rep=False`; the official code
works on parameter gradients).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds


class ConFigState(NamedTuple):
  """ConFIG needs no state; it keeps the last step's weights for inspection."""
  weights: jnp.ndarray  # f32[T], the last step's w (0 before the first step)


def pseudo_inverse(matrix: jnp.ndarray) -> jnp.ndarray:
  """f32[T, T]: the pseudo-inverse of a symmetric PSD matrix, eigenvalues <= max * T * eps cut."""
  eigenvalues, vectors = jnp.linalg.eigh(matrix)
  tol = jnp.max(eigenvalues) * matrix.shape[0] * jnp.finfo(jnp.float32).eps
  kept = eigenvalues > jnp.maximum(tol, 0.0)
  inverse = jnp.where(kept, 1.0 / jnp.where(kept, eigenvalues, 1.0), 0.0)
  return (vectors * inverse) @ vectors.T


def con_fig_weights(gram: jnp.ndarray, mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """f32[T]: w with w^T J = (sum_i <g_i, u>) u, u = unit(U^+ 1), over the tasks in `mask`."""
  gram = jnp.asarray(gram, jnp.float32)
  mask = jnp.ones(gram.shape[0], bool) if mask is None else mask
  norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
  live = mask & (norms > 0)
  inverse_norms = jnp.where(live, 1.0 / jnp.where(live, norms, 1.0), 0.0)
  cosines = gram * inverse_norms[:, None] * inverse_norms[None, :]
  direction = inverse_norms * (pseudo_inverse(cosines) @ jnp.where(live, 1.0, 0.0))
  direction = direction / jnp.maximum(jnp.max(jnp.abs(direction)), jnp.finfo(jnp.float32).tiny)
  projections = gram @ direction          # <g_i, J^T c>
  squared_norm = direction @ projections  # ||J^T c||^2
  # Leftovers of rounding in the null space of C (opposite gradients) have a vanishing norm
  # relative to their coefficients; they give a zero direction, not 0/0.
  significant = squared_norm > jnp.finfo(jnp.float32).eps * jnp.trace(
      cosines) * (direction * norms) @ (direction * norms)
  scale = jnp.where(significant, projections.sum() / jnp.where(significant, squared_norm, 1.0),
                    0.0)
  return jnp.where(mask, scale * direction, 0.0)


def make() -> Weighting:
  """ConFIG's weights (see the module docstring); no hyper-parameters (equal preferences)."""

  def init(tasks) -> ConFigState:
    return ConFigState(jnp.zeros((len(task_kinds(tasks)),), jnp.float32))

  def update(state: ConFigState, inputs: WeightingInputs):
    del state
    weights = con_fig_weights(inputs.gram, labelled(inputs.counts))
    return weights, ConFigState(weights)

  return Weighting(init, update, needs="gram")
