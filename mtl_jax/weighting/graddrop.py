"""GradDrop: gradient sign dropout.

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai and Anguelov, "Just Pick a Sign: Optimizing Deep
Multitask Models with Gradient Sign Dropout", NeurIPS 2020, https://arxiv.org/abs/2010.06808,
Eqs. 1-2 and Algorithm 1; LibMTL's `weighting/GradDrop.py`, TorchJD's `aggregation/_graddrop.py`.

Per coordinate of the per-task gradients g_i (every leaf of `inputs.grads`, [T, ...]):

    P   = 1/2 (1 + sum_i g_i / sum_i |g_i|)               (gradient positive sign purity, Eq. 1)
    M_i = I[P > U] I[g_i > 0] + I[P < U] I[g_i < 0],  U ~ Uniform(0, 1) per coordinate  (Eq. 2)
    d   = sum_i (l_i + (1 - l_i) M_i) g_i                  (l_i the leak, Algorithm 1)

with f(P) = P (the paper's default). So each coordinate keeps either its positive or its negative
task gradients, the positive ones with probability P. U comes from the step key
(`inputs.key`) through a keyed integer hash of the coordinate's index (`hashed_uniform`, 24-bit
resolution) rather than threefry, which cost a third of the method on CPU. Where every g_i is
0, P = 1/2 (LibMTL adds 1e-7 to the denominator instead).

GradDrop is not a linear combination of the task gradients, so `update` returns a `Direction`
(needs="grads"). Its effective weights, logged as "weight/<task>", are the share of each task's
squared gradient that survives the mask, w_i = <(l_i + (1 - l_i) M_i) g_i, g_i> / ||g_i||^2
(1 when nothing of task i is dropped, l_i when all of it is; 0 for a zero gradient).

Where it applies: the paper inserts GradDrop at an activation layer (the representation the
heads read), so the natural mode is the representation mode (`allows_rep`,
`grad_wrt="rep"`); in the parameter mode it acts per parameter coordinate (as TorchJD does).
For batch-separated activations the paper first sums each task's gradient over the batch
(`marginalise_batch=True`: the leaves' axis 1, the batch axis of representation gradients)
and draws one mask per feature, shared by the batch. Deviation: the paper and LibMTL weight
each example by the sign of the activation, sign(A), before that sum; methods do not see the
activations, so the plain gradients are summed (the same wherever A > 0, e.g. ReLU features
that are active).

Missing labels: a task without labels has zero gradients, so it neither moves P nor contributes
to d, and its effective weight is 0.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.weighting.base import Direction, Weighting, WeightingInputs, row_sums, task_kinds


class GraddropState(NamedTuple):
  weights: jnp.ndarray  # f32[T], the last step's effective weights (for inspection)


def sum_over_batch(x: jnp.ndarray) -> jnp.ndarray:
  """[T, B, ...] -> [T, ...]: the sum over axis 1, as a dot with ones (see
  `base.sum_over_tasks`)."""
  return jnp.einsum("tb...,b->t...", x, jnp.ones((x.shape[1],), x.dtype))


def sign_purity(signal: jnp.ndarray) -> jnp.ndarray:
  """P = 1/2 (1 + sum_i s_i / sum_i |s_i|) over the task axis 0; 1/2 where every s_i is 0.

  From the sums of the rows' positive and negative parts, taken row by row: XLA:CPU writes
  `jnp.maximum(signal, 0)` whole before summing its rows, 10x slower.
  """
  rows = [signal[i] for i in range(signal.shape[0])]
  positive = functools.reduce(operator.add, [jnp.maximum(r, 0.0) for r in rows])
  negative = functools.reduce(operator.add, [jnp.minimum(r, 0.0) for r in rows])
  magnitude = positive - negative
  return 0.5 * (1.0 + jnp.where(magnitude > 0, (positive + negative)
                                / jnp.where(magnitude > 0, magnitude, 1.0), 0.0))


def _mix32(x: jnp.ndarray) -> jnp.ndarray:
  """A bijective 32-bit integer hash with full avalanche (Wellons' "lowbias32")."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def hashed_uniform(key: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
  """f32 U[0, 1) per coordinate, 24-bit resolution: a hash of the coordinate's index keyed by
  two 32-bit seeds drawn from `key`.

  About 12x cheaper than `jax.random.uniform` (threefry) on XLA:CPU: 0.08 against 0.9 ms for
  784 x 256 values, which made the draw a third of GradDrop's cost on the MLP benchmark.
  Two keyed rounds, so the values under two keys are not a shifted copy of each other.
  """
  seeds = jax.random.bits(key, (2,), jnp.uint32)
  index = jax.lax.iota(jnp.uint32, int(np.prod(shape)))
  bits = _mix32(_mix32(index + seeds[0]) ^ seeds[1])
  return ((bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))).reshape(shape)


def kept_sign(signal: jnp.ndarray, key: jnp.ndarray) -> jnp.ndarray:
  """f32 shaped like one task's `signal` [T, ...]: per coordinate, +1 where the positive
  gradients are kept (P > U), -1 where the negative ones are (P < U), 0 where neither; so
  M_i = [sign * s_i > 0] (Eq. 2).

  Behind an optimization barrier: XLA:CPU would otherwise recompute P and U (a pass over
  every task's gradient) inside each of the T + 1 fusions that read the sign.
  """
  purity = sign_purity(signal)
  return jax.lax.optimization_barrier(jnp.sign(purity - hashed_uniform(key, purity.shape)))


def graddrop(grads: Any, key: jnp.ndarray, leak: jnp.ndarray, marginalise_batch: bool,
             squared_norms: jnp.ndarray | None = None) -> tuple[Any, jnp.ndarray]:
  """(the direction, a pytree like one task's gradient; effective weights f32[T]).

  `squared_norms`: f32[T] ||g_i||^2 if known (the Gram matrix's diagonal), else computed.
  Each task's kept row (l_i + (1 - l_i) M_i) g_i is computed once, from the shared sign, and
  read twice: summed into d and, times g_i, into the kept squares (one product with ones).
  """
  leaves, treedef = jax.tree.flatten(grads)
  keys = jax.random.split(key, len(leaves))
  direction, kept = [], 0.0
  for g, k in zip(leaves, keys):
    signal = sum_over_batch(g) if marginalise_batch else g
    sign = kept_sign(signal, k)
    leaks = leak.astype(g.dtype)

    def kept_row(i):  # (l_i + (1 - l_i) M_i) g_i, M_i broadcast over a marginalised batch
      mask = sign * signal[i] > 0
      mask = jnp.expand_dims(mask, 0) if marginalise_batch else mask
      return jnp.where(mask, g[i], leaks[i] * g[i])

    rows = [kept_row(i) for i in range(g.shape[0])]
    direction.append(functools.reduce(operator.add, rows))
    kept = kept + row_sums(jnp.stack([row * g[i] for i, row in enumerate(rows)]))
  total = sum(row_sums(g * g) for g in leaves) if squared_norms is None else squared_norms
  weights = jnp.where(total > 0, kept / jnp.where(total > 0, total, 1.0), 0.0)
  return jax.tree.unflatten(treedef, direction), weights.astype(jnp.float32)


def make(leak: float | Sequence[float] = 0.0, marginalise_batch: bool = False) -> Weighting:
  """GradDrop's direction (see the module docstring).

  Args:
    leak: l_i in [0, 1], one for all tasks or one per task (0: pure GradDrop; 1: the sum).
    marginalise_batch: sum each task's gradient over axis 1 (the batch axis of representation
      gradients) before the sign purity, one mask per feature (the paper's batch-separated
      case); use with `grad_wrt="rep"`.
  """
  leaks = np.atleast_1d(np.asarray(leak, np.float32))
  if not ((leaks >= 0) & (leaks <= 1)).all():
    raise ValueError(f"graddrop leak must be in [0, 1], got {leak}")

  def init(tasks) -> GraddropState:
    num_tasks = len(task_kinds(tasks))
    if leaks.shape[0] not in (1, num_tasks):
      raise ValueError(f"graddrop has {leaks.shape[0]} leaks for {num_tasks} tasks")
    return GraddropState(jnp.zeros((num_tasks,), jnp.float32))

  def update(state: GraddropState, inputs: WeightingInputs):
    del state
    per_task_leak = jnp.broadcast_to(jnp.asarray(leaks), inputs.losses.shape)
    direction, weights = graddrop(inputs.grads, inputs.key, per_task_leak, marginalise_batch,
                                  jnp.diag(inputs.gram) if inputs.gram is not None else None)
    return Direction(direction, weights), GraddropState(weights)

  return Weighting(init, update, needs="grads", allows_rep=True)
