"""Per-task gradients of the shared part from one forward pass, for gradient-based weighting.

The step runs the trunk (backbone + shared layers) once and keeps its VJP, runs the heads on
the representation Z and maps the heads' VJP over the T one-hot cotangents of the loss vector:
that gives every head its own task's gradient and D_t = dL_t/dZ for each task. Then

- `grad_wrt="rep"`: the task gradients are the D_t themselves (MGDA-UB's representation mode);
  their Gram matrix is nearly free, and the update is one trunk backward pass with the
  combined cotangent sum_t w_t D_t, about the cost of `equal` weighting;
- `grad_wrt="params"`: the trunk's VJP is mapped over the D_t, giving the T x |shared params|
  Jacobian J without T forward passes; the update is w^T J (or a method's own `Direction`).

Head parameters always get only their own task's gradient, unweighted. Tasks without labels in
the batch have zero loss, hence zero rows of J and of the Gram matrix.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.models.hps import TRUNK
from mtl_jax.weighting import Direction, Weighting, WeightingInputs, combine, gram_matrix

GRAD_WRT = ("params", "rep")


class TaskGradients(NamedTuple):
  """What one forward pass and the per-task backward passes give a weighting method."""
  losses: jnp.ndarray    # f32[T]
  aux: Any               # the loss function's auxiliary output (counts, KPIs, model state)
  head_grads: Any        # gradients of the head parameters, each head its own task's only
  task_grads: Any        # [T, ...]: per-task gradients of the shared params or of Z
  combine_shared: Callable[[Any], Any]  # per-task-shaped direction -> shared param gradient


def split_params(params: dict) -> tuple[dict, dict]:
  """(the trunk's parameters, the heads' parameters) of a HardParameterSharing model."""
  trunk = {k: v for k, v in params.items() if k in TRUNK}
  return trunk, {k: v for k, v in params.items() if k not in TRUNK}


def task_gradients(trunk_fn: Callable, heads_fn: Callable, params: dict, *,
                   grad_wrt: str, unroll: bool = False,
                   num_tasks: int | None = None) -> TaskGradients:
  """Per-task gradients of the shared part (see the module docstring).

  trunk_fn(trunk_params) -> (Z, trunk_aux); heads_fn(head_params, Z, trunk_aux) ->
  (losses f32[T], aux), its VJP then mapped over the T one-hot cotangents (each head's
  backward pass runs T times, T - 1 of them on zeros). With `num_tasks` given, heads_fn takes
  a tuple of T copies of Z and head t must read only the t-th: one VJP of the heads with
  cotangent ones then gives every head's gradient and every D_t (the cotangent of copy t).
  `unroll`: a Python loop over the T trunk VJPs instead of `vmap`. On XLA:CPU (jax 0.10) the
  loop is the faster for convolutional trunks (vmap turns their weight gradients into slow
  grouped convolutions) and for dense ones (vmap fuses the T weight gradients into one dot
  whose [T * out, in] result the Gram matrix and the combination read transposed): MLP
  784-256, T = 8, batch 128, 4.6 against 6.1 ms per step.
  """
  trunk_params, head_params = split_params(params)
  rep, trunk_vjp, trunk_aux = jax.vjp(trunk_fn, trunk_params, has_aux=True)
  if num_tasks is None:
    losses, aux, head_grads, rep_grads = _mapped_heads_backward(
        lambda hp, z: heads_fn(hp, z, trunk_aux), head_params, rep)
  else:
    losses, aux, head_grads, rep_grads = _split_heads_backward(
        lambda hp, zs: heads_fn(hp, zs, trunk_aux), head_params, rep, num_tasks)

  if grad_wrt == "rep":
    return TaskGradients(losses, aux, head_grads, rep_grads,
                         lambda d_rep: trunk_vjp(d_rep)[0])
  if unroll:
    per_task = [trunk_vjp(jax.tree.map(lambda d: d[t], rep_grads))[0]
                for t in range(losses.shape[0])]
    jacobian = jax.tree.map(lambda *g: jnp.stack(g), *per_task)
  else:
    jacobian = jax.vmap(lambda d: trunk_vjp(d)[0])(rep_grads)
  return TaskGradients(losses, aux, head_grads, jacobian, lambda shared: shared)


def _mapped_heads_backward(heads_fn: Callable, head_params: dict, rep):
  """(losses, aux, head grads, D [T, ...]): the heads' VJP mapped over one-hot cotangents."""
  losses, heads_vjp, aux = jax.vjp(heads_fn, head_params, rep, has_aux=True)
  num_tasks = losses.shape[0]
  head_grads_per_task, rep_grads = jax.vmap(heads_vjp)(jnp.eye(num_tasks, dtype=losses.dtype))
  head_grads = jax.tree.map(lambda g: g.sum(0), head_grads_per_task)  # heads are disjoint
  return losses, aux, head_grads, rep_grads


def _split_heads_backward(heads_fn: Callable, head_params: dict, rep, num_tasks: int):
  """(losses, aux, head grads, D [T, ...]): one VJP of heads that read one copy of Z each.

  The copies are T separate arguments, so each head's backward writes only its own D_t.
  """
  losses, heads_vjp, aux = jax.vjp(heads_fn, head_params, (rep,) * num_tasks, has_aux=True)
  head_grads, rep_grads = heads_vjp(jnp.ones_like(losses))
  return losses, aux, head_grads, jax.tree.map(lambda *d: jnp.stack(d), *rep_grads)


def apply_weighting(weighting: Weighting, state: Any, inputs: WeightingInputs,
                    grads: TaskGradients) -> tuple[dict, jnp.ndarray, Any, jnp.ndarray]:
  """(full parameter gradient, effective weights f32[T], new weighting state, Gram f32[T, T]).

  The method sees the Gram matrix of the task gradients (and the gradients themselves if it
  needs them); its weights w give the shared gradient from sum_t w_t g_t, or it returns a
  `Direction` directly.
  """
  gram = gram_matrix(grads.task_grads)
  inputs = inputs._replace(gram=gram,
                           grads=grads.task_grads if weighting.needs == "grads" else None)
  result, state = weighting.update(state, inputs)
  if isinstance(result, Direction):
    direction, weights = result.grads, result.weights
  else:
    weights = jax.lax.stop_gradient(result).astype(grads.losses.dtype)
    direction = combine(weights, grads.task_grads)
  shared = grads.combine_shared(direction)
  return {**shared, **grads.head_grads}, weights, state, gram
