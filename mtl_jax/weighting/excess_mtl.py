"""ExcessMTL: task weights from estimated excess risks, updated by exponentiated gradient.

He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi and Zhao, "Robust Multi-Task Learning with Excess
Risks", ICML 2024, https://arxiv.org/abs/2402.02009, Algorithm 1; official code
github.com/yifei-he/ExcessMTL (`LibMTL/LibMTL/weighting/ExcessMTL.py`), also in LibMTL.

A task's excess risk (its distance to convergence) is estimated from a second-order Taylor
expansion with the Hessian approximated by its diagonal, H_i = diag(sqrt(sum_s g_i(s)^2)) as in
AdaGrad (squared gradients accumulated over the steps s so far):

    A_i  <- A_i + g_i * g_i                      (per coordinate)
    e_i   = g_i^T diag(1 / sqrt(A_i + 1e-7)) g_i
    w_i  <- w_i exp(robust_step_size * e_i / e_i(0)),  then w scaled to sum to T

with e_i(0) the estimate at the first update (which leaves w = 1). The model's step uses the
updated weights (as the official code), so the method returns weights: the loss gradient is
sum_i w_i g_i.

`hessian="diagonal"` (the paper) needs "grads" and keeps A in the state: T times the size of
the shared parameters (float32); `init(tasks, grads_like=...)` allocates it from a pytree shaped
like `inputs.grads` ([T, ...] leaves), without which `update` raises. `hessian="scalar"` is a
cheaper estimate of our own that needs only the Gram matrix: one accumulator per task,
A_i <- A_i + ||g_i||^2 and e_i = ||g_i||^2 / sqrt(A_i + 1e-7), the diagonal estimate with every
coordinate's accumulator replaced by one shared value (a constant factor, sqrt(dimension), that
the ratio e_i / e_i(0) removes).

Allowed in the representation mode (as LibMTL): the coordinates are then those of the
representation gradient, (example slot, feature); LibMTL sums the representation gradient over
the batch before squaring.

Missing labels: a task without labels in the batch adds nothing to A_i (its gradient is 0),
keeps its w_i and gets weight 0; the labelled tasks' weights keep their total. e_i(0) is set at
a task's first update with labels and a non-zero estimate (the official code takes every
task's at the first step), and a task's weight moves only from its next update with labels.
The exponentiated step is taken in log space (a softmax), so it cannot overflow.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import (Weighting, WeightingInputs, gradient_buffers, labelled,
                                    require_buffers, row_sums, task_kinds)

HESSIANS = ("diagonal", "scalar")
ACCUMULATOR_EPS = 1e-7  # sqrt(A + eps), as the official code


class ExcessMTLState(NamedTuple):
  weights: jnp.ndarray         # f32[T], w, summing to T
  squared_sums: Any            # A: [T, ...] pytree like inputs.grads, or f32[T] (scalar)
  initial_excess: jnp.ndarray  # f32[T], e_i(0)
  has_initial: jnp.ndarray     # bool[T], whether initial_excess[i] is set


def diagonal_excess(squared_sums: Any, grads: Any) -> tuple[Any, jnp.ndarray]:
  """(A + g*g, f32[T] e_i = sum_k g_ik^2 / sqrt(A_ik + g_ik^2 + eps)) for per-task gradients."""
  squared_sums = jax.tree.map(lambda a, g: a + jnp.square(g.astype(jnp.float32)),
                              squared_sums, grads)
  terms = jax.tree.map(
      lambda a, g: row_sums(jnp.square(g.astype(jnp.float32)) / jnp.sqrt(a + ACCUMULATOR_EPS)),
      squared_sums, grads)
  return squared_sums, sum(jax.tree.leaves(terms))


def scalar_excess(squared_sums: jnp.ndarray, gram: jnp.ndarray) -> tuple[jnp.ndarray,
                                                                            jnp.ndarray]:
  """(A + ||g||^2, f32[T] e_i = ||g_i||^2 / sqrt(A_i + ||g_i||^2 + eps)) from the Gram matrix."""
  squares = jnp.maximum(jnp.diag(gram), 0.0)
  squared_sums = squared_sums + squares
  return squared_sums, squares / jnp.sqrt(squared_sums + ACCUMULATOR_EPS)


def exponentiated_step(weights: jnp.ndarray, exponents: jnp.ndarray,
                       mask: jnp.ndarray) -> jnp.ndarray:
  """f32[T]: w_i exp(x_i) over `mask`, scaled to the masked weights' old total; others kept."""
  total = jnp.where(mask, weights, 0.0).sum()
  logits = jnp.log(jnp.maximum(weights, jnp.finfo(jnp.float32).tiny)) + exponents
  logits = jnp.where(mask, logits, -jnp.inf)
  moved = total * jax.nn.softmax(jnp.where(mask.any(), logits, 0.0))
  return jnp.where(mask, moved, weights)


def make(robust_step_size: float = 1e-2, hessian: str = "diagonal") -> Weighting:
  """ExcessMTL's weights (see the module docstring).

  Args:
    robust_step_size: the exponentiated-gradient step size (the official code's default
      1e-2; its README's Office-Home example uses 1).
    hessian: "diagonal" (the paper's estimate, needs the per-task gradients) or "scalar" (one
      accumulator per task, from the Gram matrix).
  """
  if hessian not in HESSIANS:
    raise ValueError(f"excess_mtl: hessian must be one of {HESSIANS}, got {hessian!r}")
  if not robust_step_size > 0:
    raise ValueError(f"excess_mtl needs robust_step_size > 0, got {robust_step_size}")
  diagonal = hessian == "diagonal"

  def init(tasks, grads_like: Any = None) -> ExcessMTLState:
    num_tasks = len(task_kinds(tasks))
    zeros = jnp.zeros((num_tasks,), jnp.float32)
    sums = gradient_buffers(grads_like, num_tasks, "excess_mtl") if diagonal else zeros
    return ExcessMTLState(jnp.ones((num_tasks,), jnp.float32), sums, zeros,
                          jnp.zeros((num_tasks,), bool))

  def update(state: ExcessMTLState, inputs: WeightingInputs):
    has_labels = labelled(inputs.counts)
    if diagonal:
      require_buffers(state.squared_sums, "excess_mtl with hessian='diagonal'")
      squared_sums, excess = diagonal_excess(state.squared_sums, inputs.grads)
    else:
      squared_sums, excess = scalar_excess(state.squared_sums, inputs.gram)
    ready = has_labels & state.has_initial
    ratio = excess / jnp.where(ready, state.initial_excess, 1.0)
    exponents = jnp.where(ready, robust_step_size * ratio, 0.0)
    weights = exponentiated_step(state.weights, exponents, has_labels)
    first = has_labels & ~state.has_initial & (excess > 0)
    new_state = ExcessMTLState(weights, squared_sums,
                               jnp.where(first, excess, state.initial_excess),
                               state.has_initial | first)
    return jnp.where(has_labels, weights, 0.0), new_state

  return Weighting(init, update, needs="grads" if diagonal else "gram", allows_rep=True,
                   grad_state=diagonal)
