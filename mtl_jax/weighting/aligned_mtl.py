"""Aligned-MTL: align the task gradients into a matrix of condition number 1.

Senushkin, Patakin, Kuznetsov and Konushin, "Independent Component Alignment for Multi-Task
Learning", CVPR 2023, https://arxiv.org/abs/2305.19000, Algorithm 1; official code
github.com/SamsungLabs/MTL (`code/optim/aligned/solver.py`, ProcrustesSolver; `balancer.py`),
also LibMTL's `weighting/Aligned_MTL.py` and torchjd's `AlignedMTL`.

With the eigendecomposition G = J J^T = V diag(lambda) V^T over its numerical rank r (the
eigenvalues above lambda_max * T * eps_f32, as the official code), the aligned gradient matrix
is J' = B J with

    B = sqrt(lambda_scale) V_r diag(lambda_r^-1/2) V_r^T,

the closest matrix to J (orthogonal Procrustes) whose nonzero singular values all equal
sqrt(lambda_scale): condition number 1. lambda_scale is the smallest kept eigenvalue
("min", the paper's and official default), their median ("median"; the official code uses
torch.median, the lower median for an even count, and so does this one) or their mean
("rmse"). The update is the sum of the aligned gradients, d = 1^T J' = (B 1)^T J, so the
weights are w = B 1 (official `weights.sum(-1)`, LibMTL's `B.sum(0)`; torchjd averages
instead, w = B 1 / T). All of it needs only G.

Degenerate inputs: directions of G below the rank tolerance (a zero gradient, the difference of
two parallel gradients) are dropped, so a zero gradient gets weight 0 and opposite gradients
cancel; all-zero G (rank 0) gives B = I as torchjd (the official code fails there). Tasks
without labels have zero rows of G, are dropped the same way and get weight 0. The state only
keeps the last weights.

Representation mode allowed (`allows_rep=True`): the official code's "amtlub" balancer is
Aligned-MTL on the gradients of the shared representation, and LibMTL allows rep_grad.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds

SCALE_MODES = ("min", "median", "rmse")


class AlignedMtlState(NamedTuple):
  """Aligned-MTL needs no state; it keeps the last step's weights for inspection."""
  weights: jnp.ndarray  # f32[T], the last step's w (0 before the first step)


def balance_matrix(gram: jnp.ndarray, scale_mode: str = "min") -> jnp.ndarray:
  """f32[T, T]: B = sqrt(lambda_scale) V_r diag(lambda_r^-1/2) V_r^T, so that B J has equal
  nonzero singular values (identity when G is 0)."""
  gram = jnp.asarray(gram, jnp.float32)
  num_tasks = gram.shape[0]
  eigenvalues, vectors = jnp.linalg.eigh(gram)
  tol = jnp.max(eigenvalues) * num_tasks * jnp.finfo(jnp.float32).eps
  kept = eigenvalues > tol
  rank = kept.sum()
  if scale_mode == "min":
    scale = jnp.min(jnp.where(kept, eigenvalues, jnp.inf))
  elif scale_mode == "median":  # lower median of the kept eigenvalues (torch.median)
    ascending_kept = jnp.sort(jnp.where(kept, eigenvalues, jnp.inf))
    scale = ascending_kept[jnp.maximum(rank - 1, 0) // 2]
  else:  # "rmse": the mean kept eigenvalue
    scale = jnp.sum(jnp.where(kept, eigenvalues, 0.0)) / jnp.maximum(rank, 1)
  safe = jnp.where(kept, eigenvalues, 1.0)
  gains = jnp.where(kept, jnp.sqrt(jnp.where(rank > 0, scale, 1.0) / safe), 0.0)
  balance = (vectors * gains) @ vectors.T
  return jnp.where(rank > 0, balance, jnp.eye(num_tasks, dtype=gram.dtype))


def make(scale_mode: str = "min") -> Weighting:
  """Aligned-MTL's weights (see the module docstring).

  Args:
    scale_mode: the common singular value: "min" (paper default), "median" or "rmse".
  """
  if scale_mode not in SCALE_MODES:
    raise ValueError(f"aligned_mtl scale_mode must be one of {SCALE_MODES}; got {scale_mode!r}")

  def init(tasks) -> AlignedMtlState:
    return AlignedMtlState(jnp.zeros((len(task_kinds(tasks)),), jnp.float32))

  def update(state: AlignedMtlState, inputs: WeightingInputs):
    del state
    mask = labelled(inputs.counts)
    gram = jnp.where(mask[:, None] & mask[None, :], inputs.gram, 0.0)
    weights = balance_matrix(gram, scale_mode) @ jnp.where(mask, 1.0, 0.0)
    weights = jnp.where(mask, weights, 0.0)
    return weights, AlignedMtlState(weights)

  return Weighting(init, update, needs="gram", allows_rep=True)
