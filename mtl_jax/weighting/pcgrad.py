"""PCGrad: project each task gradient off the gradients it conflicts with.

Yu, Kumar, Gupta, Levine, Hausman and Finn, "Gradient Surgery for Multi-Task Learning",
NeurIPS 2020, https://arxiv.org/abs/2001.06782, Algorithm 1; official code
github.com/tianheyu927/PCGrad (`PCGrad_tf.py`), also LibMTL's `weighting/PCGrad.py`.

For every task i, starting from g_i^PC = g_i and visiting the other tasks j in random order:

    if <g_i^PC, g_j> < 0:   g_i^PC <- g_i^PC - <g_i^PC, g_j> / ||g_j||^2 g_j

and the update is d = sum_i g_i^PC (Algorithm 1; the official code sums too). Each g_i^PC is
a linear combination of the original gradients, g_i^PC = sum_k C_ik g_k, so the projections run
on the Gram matrix alone: <g_i^PC, g_j> = (C G)_ij, and a projection subtracts
<g_i^PC, g_j> / G_jj from C_ij. The weights are the column sums w = 1^T C, so d = w^T J.

Randomness: each task i visits the others in its own random order, drawn from the step's key
(`inputs.key`), as in Algorithm 1 and LibMTL (the official TF code uses one order for all i).
The projections use no epsilon (a projection onto g_j is skipped when G_jj = 0, where
<g_i^PC, g_j> = 0 anyway), so a projected pair is exactly orthogonal up to rounding.

Missing labels: a task without labels (count 0, zero row of G) is neither projected nor
projected on and gets weight 0. Degenerate inputs: a zero gradient conflicts with nothing;
parallel gradients do not conflict; exactly opposite gradients g, -g both project to 0, so
w = (2, 2) and d = 0. Head gradients are not weighted. Not allowed in the representation mode
(LibMTL refuses it too): the paper defines PCGrad on the shared parameters' gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import (Weighting, WeightingInputs, labelled, task_kinds,
                                    task_orders)


class PcgradState(NamedTuple):
  weights: jnp.ndarray  # f32[T], the last step's effective weights (for inspection)


def projection_coefficients(gram: jnp.ndarray, orders: jnp.ndarray,
                            mask: jnp.ndarray) -> jnp.ndarray:
  """f32[T, T] C with g_i^PC = sum_k C_ik g_k after Algorithm 1's projections of row i.

  Args:
    gram: f32[T, T], G = J J^T.
    orders: i32[T, T], the visiting order of each task (see `base.task_orders`).
    mask: bool[T], the tasks that take part (labelled).
  """
  num_tasks = gram.shape[0]
  eye = jnp.eye(num_tasks, dtype=gram.dtype)

  def project_row(i, order):
    def visit(k, row):
      j = order[k]
      dot = row @ gram[:, j]  # <g_i^PC, g_j>
      conflict = (j != i) & mask[i] & mask[j] & (gram[j, j] > 0) & (dot < 0)
      scale = dot / jnp.where(gram[j, j] > 0, gram[j, j], 1.0)
      return jnp.where(conflict, row - scale * eye[j], row)
    return jax.lax.fori_loop(0, num_tasks, visit, eye[i], unroll=True)

  return jax.vmap(project_row)(jnp.arange(num_tasks), orders)


def pcgrad_weights(gram: jnp.ndarray, key: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """f32[T] w = sum_i C_i over the labelled tasks i, so that w^T J = sum_i g_i^PC."""
  coefficients = projection_coefficients(gram, task_orders(key, gram.shape[0]), mask)
  return jnp.where(mask[:, None], coefficients, 0.0).sum(0)


def make() -> Weighting:
  """PCGrad's effective task weights (see the module docstring); no hyper-parameters."""

  def init(tasks) -> PcgradState:
    return PcgradState(jnp.zeros((len(task_kinds(tasks)),), jnp.float32))

  def update(state: PcgradState, inputs: WeightingInputs):
    del state
    weights = pcgrad_weights(inputs.gram, inputs.key, labelled(inputs.counts))
    return weights, PcgradState(weights)

  return Weighting(init, update, needs="gram", allows_rep=False)
