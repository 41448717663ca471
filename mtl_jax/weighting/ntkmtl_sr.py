"""NTKMTL-SR: NTKMTL's weights from the shared representation, with one backward pass.

Qin, Wang, Liao and Yan, "NTKMTL: Mitigating Task Imbalance in Multi-Task Learning from Neural
Tangent Kernel Perspective", NeurIPS 2025, https://arxiv.org/abs/2510.18258 (NTKMTL-SR, the
shared-representation variant); official code github.com/jianke0604/NTKMTL
(`methods/weight_methods.py`, class NTKMTL, the commented "NTKMTL-SR" block, with the per-chunk
losses of `experiments/*/trainer.py`, `num_split = 4`).

The batch is cut into n chunks (torch.chunk: runs of ceil(B / n) rows); task i's NTK on the
representation Z is the n x n matrix K_i = J_i J_i^T, row j of J_i the gradient of the chunk's
mean loss L_ij with respect to Z. The weights are NTKMTL's ratio of eigenvalues,

    w_i = (sum_k lambda_k / lambda_i)^gamma,    lambda_i = the largest eigenvalue of K_i,

and the update is that of sum_i w_i L_i: one backward pass, with no T factor and no clip (the
SR branch returns the weighted loss to the default backward, whose clip precedes it).

From our representation mode (`rep_only`: D_i = dL_i/dZ [T, B, ...], row b of D_i nonzero only
through example b, the heads reading each example alone): the chunks of rows are disjoint, so
K_i is diagonal and lambda_i = max_j ||dL_ij/dZ||^2 = max_j (B / |chunk j|)^2 ||D_i[chunk j]||^2
when every example is labelled; the common factor B^2 cancels in the ratio
(`chunk_eigenvalues`).

Deviations: with missing labels, a chunk's loss is scaled as if all its rows were labelled
(the chunk's labelled count is not known here, only the batch's); the head parameters get their
own task's gradient, unweighted, as in every gradient method here, where the official backward
of sum_i w_i L_i scales the head gradients by w_i. A task without labels, or with a zero
representation gradient, gets weight 0 (`base.ntk_ratios`). gamma = 0.5 and n = 4 as in the
official code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, ntk_ratios, task_kinds


class NtkmtlSrState(NamedTuple):
  """NTKMTL-SR needs no state; it keeps the last step's weights for inspection."""
  weights: jnp.ndarray  # f32[T]


def chunk_eigenvalues(grads: Any, num_chunks: int) -> jnp.ndarray:
  """f32[T]: max over the batch chunks of ||D_i[chunk]||^2 / |chunk|^2 (lambda_i / B^2), for
  representation gradients whose leaves are [T, B, ...] (B the batch, cut into runs of
  ceil(B / num_chunks) rows)."""
  leaves = jax.tree.leaves(grads)
  if any(leaf.ndim < 2 for leaf in leaves):
    raise ValueError("ntkmtl_sr reads per-task representation gradients [T, B, ...]")
  num_tasks, batch = leaves[0].shape[:2]
  rows = sum(jnp.sum(leaf.astype(jnp.float32).reshape(num_tasks, batch, -1) ** 2, axis=-1)
             for leaf in leaves)                                         # [T, B]
  chunk = jnp.arange(batch) // -(-batch // num_chunks)
  per_chunk = jax.ops.segment_sum(rows.T, chunk, num_segments=num_chunks)  # [n, T]
  sizes = jax.ops.segment_sum(jnp.ones((batch,), jnp.float32), chunk, num_segments=num_chunks)
  # d(chunk mean)/dZ = (B / |chunk|) D_i[chunk]: the last chunk may be shorter.
  return jnp.max(per_chunk / jnp.maximum(sizes, 1.0)[:, None] ** 2, axis=0)


def make(gamma: float = 0.5, num_chunks: int = 4) -> Weighting:
  """NTKMTL-SR's weights (see the module docstring). Defaults: the official code's.

  Args:
    gamma: the exponent of the NTK ratio, > 0 (`ntk_exp`, 0.5).
    num_chunks: n, the chunks of the batch whose losses form each task's NTK (`num_split`, 4).
  """
  if not gamma > 0 or num_chunks < 1:
    raise ValueError(f"ntkmtl_sr needs gamma > 0 and num_chunks >= 1; got {gamma}, "
                     f"{num_chunks}")
  gamma = float(gamma)

  def init(tasks) -> NtkmtlSrState:
    return NtkmtlSrState(jnp.zeros((len(task_kinds(tasks)),), jnp.float32))

  def update(state: NtkmtlSrState, inputs: WeightingInputs):
    del state
    weights = ntk_ratios(chunk_eigenvalues(inputs.grads, num_chunks), labelled(inputs.counts),
                         gamma)
    return weights, NtkmtlSrState(weights)

  return Weighting(init, update, needs="grads", allows_rep=True, rep_only=True)
