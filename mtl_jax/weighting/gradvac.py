"""GradVac (Gradient Vaccine): raise each pair's gradient similarity to its running target.

Wang, Tsvetkov, Firat and Cao, "Gradient Vaccine: Investigating and Improving Multi-task
Optimization in Massively Multilingual Models", ICLR 2021, https://arxiv.org/abs/2010.05874,
Sec. 3.3 and Algorithm 1 (no official code); LibMTL's `weighting/GradVac.py` and TorchJD's
`aggregation/_gradvac.py` (defaults beta = 0.5, eps = 1e-8).

For every task i, starting from g_i' = g_i and visiting the other tasks j in random order, with
phi_ij = cos(g_i', g_j) and the target phi_hat_ij (an EMA kept in the state):

    if phi_ij < phi_hat_ij:
      g_i' <- g_i' + ||g_i'|| (phi_hat_ij sqrt(1 - phi_ij^2) - phi_ij sqrt(1 - phi_hat_ij^2))
                     / (||g_j|| sqrt(1 - phi_hat_ij^2)) g_j
    phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij

(the update sets cos(g_i', g_j) to phi_hat_ij exactly), and the update is d = sum_i g_i'. As in
LibMTL and TorchJD, phi_ij is measured before the pair's correction and phi_hat starts at 0 (so
GradVac starts as PCGrad). Like `pcgrad`, every g_i' is tracked as coefficients C_i of the
original gradients, so it all runs on the Gram matrix: w = 1^T C.

Deviations: the paper keeps one target per parameter group k (e.g. per layer); with only the
Gram matrix of the whole shared gradient we keep one per task pair (whole-model granularity,
LibMTL's and TorchJD's default `group_type=0`). The visiting orders come from the step key
(`inputs.key`), each task its own. Numerics: the correction is taken only when
phi_ij < phi_hat_ij - `tol` (f32 cosines of nearly parallel gradients are accurate only to
~1e-7; without it, identical gradients, whose target tends to 1, would be "corrected" by a
huge multiple from rounding noise), sqrt(1 - phi_hat^2) is clamped to >= `eps`, and cosines of
a zero gradient are 0.

Missing labels: a task without labels is neither corrected nor used to correct, its targets
(row and column of phi_hat) keep their values, and it gets weight 0. Head gradients are not
weighted. Not allowed in the representation mode (LibMTL refuses it too).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import (Weighting, WeightingInputs, labelled, task_kinds,
                                    task_orders)


class GradvacState(NamedTuple):
  targets: jnp.ndarray  # f32[T, T], phi_hat_ij, the EMA of cos(g_i', g_j) (diagonal unused)


def _safe_cosine(dot, norm_a, norm_b):
  """dot / (norm_a norm_b) clipped to [-1, 1]; 0 where a norm is 0."""
  product = norm_a * norm_b
  return jnp.clip(jnp.where(product > 0, dot / jnp.where(product > 0, product, 1.0), 0.0),
                  -1.0, 1.0)


def vaccinate(gram: jnp.ndarray, targets: jnp.ndarray, orders: jnp.ndarray, mask: jnp.ndarray,
              beta: float, tol: float, eps: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(C f32[T, T] with g_i' = sum_k C_ik g_k, the new targets f32[T, T]).

  Args:
    gram: f32[T, T], G = J J^T.
    targets: f32[T, T], phi_hat before this step.
    orders: i32[T, T], the order in which each task visits the others (`base.task_orders`).
    mask: bool[T], the labelled tasks.
    beta, tol, eps: see `make`.
  """
  num_tasks = gram.shape[0]
  eye = jnp.eye(num_tasks, dtype=gram.dtype)
  norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))

  def vaccinate_row(i, order, target_row):
    def visit(k, carry):
      row, target_row = carry
      j = order[k]
      active = (j != i) & mask[i] & mask[j]
      row_gram = row @ gram                               # <g_i', g_m> for every m
      norm_i = jnp.sqrt(jnp.maximum(row_gram @ row, 0.0))  # ||g_i'||
      phi = _safe_cosine(row_gram[j], norm_i, norms[j])
      target = target_row[j]
      sin_target = jnp.maximum(jnp.sqrt(jnp.maximum(1.0 - target**2, 0.0)), eps)
      numerator = target * jnp.sqrt(jnp.maximum(1.0 - phi**2, 0.0)) - phi * sin_target
      scale = norm_i * numerator / jnp.where(norms[j] > 0, norms[j] * sin_target, 1.0)
      correct = active & (norms[j] > 0) & (phi < target - tol)
      row = jnp.where(correct, row + scale * eye[j], row)
      target_row = jnp.where(active, target_row.at[j].set((1 - beta) * target + beta * phi),
                             target_row)
      return row, target_row
    return jax.lax.fori_loop(0, num_tasks, visit, (eye[i], target_row), unroll=True)

  return jax.vmap(vaccinate_row)(jnp.arange(num_tasks), orders, targets)


def make(beta: float = 0.5, tol: float = 1e-6, eps: float = 1e-8) -> Weighting:
  """GradVac's effective task weights (see the module docstring).

  Args:
    beta: EMA rate of the similarity targets (LibMTL and TorchJD default 0.5).
    tol: a pair is corrected only when phi_ij < phi_hat_ij - tol.
    eps: lower clamp of sqrt(1 - phi_hat^2) in the correction's denominator.
  """
  if not 0.0 <= beta <= 1.0 or not tol >= 0 or not eps > 0:
    raise ValueError(f"gradvac needs 0 <= beta <= 1, tol >= 0, eps > 0; got {beta}, {tol}, {eps}")

  def init(tasks) -> GradvacState:
    num_tasks = len(task_kinds(tasks))
    return GradvacState(jnp.zeros((num_tasks, num_tasks), jnp.float32))

  def update(state: GradvacState, inputs: WeightingInputs):
    mask = labelled(inputs.counts)
    orders = task_orders(inputs.key, inputs.gram.shape[0])
    coefficients, targets = vaccinate(inputs.gram, state.targets, orders, mask, beta, tol, eps)
    weights = jnp.where(mask[:, None], coefficients, 0.0).sum(0)
    return weights, GradvacState(targets)

  return Weighting(init, update, needs="gram", allows_rep=False)
