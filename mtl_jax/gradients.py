"""Per-task gradients of the shared parameters from one forward pass, for gradient methods.

Which parameters are shared is the model's declaration (`mtl_jax.models.base`). Two paths:

**Split models** (`encode`/`decode`). The step runs the encoder once and keeps its VJP, runs
the heads on {task: Z_t} (one copy of Z per task when every head reads the same Z) and takes
one VJP of the heads with cotangent ones: each head gets its own task's gradient, and the
cotangent of copy t is D_t = dL_t/dZ_t. Then

- `grad_wrt="rep"`: the task gradients are the D_t themselves (MGDA-UB's representation mode);
  their Gram matrix is nearly free, and the update is one encoder backward pass with the
  combined cotangent sum_t w_t D_t, about the cost of `equal` weighting;
- `grad_wrt="params"`: the encoder's VJP is mapped over the D_t, giving the T x |shared|
  Jacobian J without T forward passes; the update is w^T J (or a method's own `Direction`).

**Any other model** (`generic_task_gradients`): the VJP of the whole model is mapped over the
T one-hot cotangents of the loss vector; J is its restriction to the shared parameters, and
each task parameter takes the row of the task that owns it.

Task parameters always get only their own task's gradient, unweighted. Tasks without labels in
the batch have zero loss, hence zero rows of J and of the Gram matrix.

Methods that read only the Gram matrix G = J J^T do not need J when every trainable parameter
of the encoder belongs to a Dense layer (`dense_gram`): for y = x W + b the Gram block of tasks
s and t is <K, D_s D_t^T> with K = x x^T + 1 over the batch and D_t the task's cotangent at y.
The T cotangents at every Dense output come from backward passes through the activations
only, G from the K's, and the update is one encoder backward with the weighted cotangent at Z:
exact (tested against J to 1e-5), and on the MLP benchmark a fraction of J's cost.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

import flax.linen as nn

from mtl_jax.models.base import merge_params
from mtl_jax.weighting import Direction, Weighting, WeightingInputs, combine, gram_matrix

GRAD_WRT = ("params", "rep")


class TaskGradients(NamedTuple):
  """What one forward pass and the per-task backward passes give a weighting method."""
  losses: jnp.ndarray    # f32[T]
  aux: Any               # the loss function's auxiliary output (counts, KPIs, model state)
  head_grads: Any        # gradients of the task parameters, each its own task's only
  task_grads: Any        # [T, ...]: per-task gradients of the shared params or of Z
  combine_shared: Callable[[Any], Any]  # per-task-shaped direction -> shared param gradient
  gram: Any = None       # f32[T, T] when known without task_grads (`dense_gram`)


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def task_gradients(encode_fn: Callable, decode_fn: Callable, shared_params: Any,
                   task_params: Any, owner_index: Any, task_names: Sequence[str], *,
                   grad_wrt: str, unroll: bool = False, gram_only: bool = False) -> TaskGradients:
  """Per-task gradients of a split model (see the module docstring).

  encode_fn(shared_params, task_params) -> (Z or {task: Z_t}, encoder aux); decode_fn(
  task_params, {task: Z_t}, encoder aux) -> (losses f32[T] in `task_names` order, aux), where
  head t reads only the t-th entry. Task parameters the encoder reads (MMoE's task gates) may
  shape only their own task's Z_t. `owner_index`: a pytree like `task_params` whose leaves are
  the index of the owning task.
  `unroll`: a Python loop over the T encoder VJPs instead of `vmap`. On XLA:CPU (jax 0.10) the
  loop is the faster for convolutional trunks (vmap turns their weight gradients into slow
  grouped convolutions) and for dense ones (vmap fuses the T weight gradients into one dot
  whose [T * out, in] result the Gram matrix and the combination read transposed): MLP
  784-256, T = 8, batch 128, 4.6 against 6.1 ms per step.
  `gram_only`: the caller reads only the Gram matrix of the params-mode gradients; for
  all-Dense encoders it then comes from `dense_gram` and `task_grads` are the D_t at Z.
  """
  tapped = None
  if gram_only and grad_wrt == "params":
    tapped = dense_taps(lambda sp: encode_fn(sp, task_params), shared_params)
  if tapped is not None:
    rep, tapped_vjp, (encoder_aux, inputs) = jax.vjp(
        lambda sp, e, tp: tapped_call(lambda p: encode_fn(p, tp), sp, e, tapped),
        shared_params, tapped.zeros, task_params, has_aux=True)
    encoder_vjp = lambda d: (lambda g: (g[0], g[2]))(tapped_vjp(d))
  else:
    rep, encoder_vjp, encoder_aux = jax.vjp(encode_fn, shared_params, task_params, has_aux=True)
  per_task = isinstance(rep, dict)
  reps = {t: rep[t] for t in task_names} if per_task else {t: rep for t in task_names}
  losses, heads_vjp, aux = jax.vjp(lambda hp, zs: decode_fn(hp, zs, encoder_aux),
                                   task_params, reps, has_aux=True)
  head_grads, rep_cotangents = heads_vjp(jnp.ones_like(losses))
  rep_grads = _rep_jacobian(rep_cotangents, task_names, per_task)
  # Task parameters inside the encoder shape only their own Z_t: the summed cotangent gives
  # each its own task's gradient (zeros, pruned by XLA, when the encoder reads none).
  in_encoder = lambda: encoder_vjp(jax.tree.map(lambda d: d.sum(0), rep_grads))[1]

  if grad_wrt == "rep":
    return TaskGradients(losses, aux, _add(head_grads, in_encoder()), rep_grads,
                         lambda d_rep: encoder_vjp(d_rep)[0])
  if tapped is not None:  # the D_t at every Dense output: activations' backward passes only
    outputs = jax.vmap(lambda d: tapped_vjp(d)[1])(rep_grads)
    gram = dense_gram(inputs, outputs, tapped.biases)
    return TaskGradients(losses, aux, _add(head_grads, in_encoder()), rep_grads,
                         lambda d_rep: encoder_vjp(d_rep)[0], gram)
  if unroll:
    jacobian, rows = _stack([encoder_vjp(jax.tree.map(lambda d: d[t], rep_grads))
                             for t in range(len(task_names))])
  else:
    jacobian, rows = jax.vmap(encoder_vjp)(rep_grads)
  own = jax.tree.map(lambda g, t: g[t], rows, owner_index)
  return TaskGradients(losses, aux, _add(head_grads, own), jacobian, lambda shared: shared)


def _add(a: Any, b: Any) -> Any:
  return jax.tree.map(jnp.add, a, b)


def _rep_jacobian(cotangents: dict, task_names: Sequence[str], per_task: bool) -> Any:
  """[T, ...]: row t the cotangent of the encoder's output from task t alone.

  One shared Z: row t is D_t. One Z_s per task: row t is {s: D_t if s == t else 0}.
  """
  if not per_task:
    return _stack([cotangents[t] for t in task_names])
  zero = lambda t: jax.tree.map(jnp.zeros_like, cotangents[t])
  return {s: _stack([cotangents[s] if t == s else zero(s) for t in task_names])
          for s in task_names}


def generic_task_gradients(loss_fn: Callable, shared_params: Any, task_params: Any,
                           owner_index: Any, num_tasks: int, *,
                           unroll: bool = False) -> TaskGradients:
  """Per-task gradients of a model without the encoder/decoder split.

  loss_fn(shared_params, task_params) -> (losses f32[T], aux); `owner_index` is a pytree like
  `task_params` whose leaves are the index of the owning task. The VJP of the whole model is
  mapped over the T one-hot cotangents; the shared rows form J, each task parameter takes its
  owner's row.
  """
  losses, model_vjp, aux = jax.vjp(loss_fn, shared_params, task_params, has_aux=True)
  cotangents = jnp.eye(num_tasks, dtype=losses.dtype)
  if unroll:
    jacobian, per_task = _stack([model_vjp(cotangents[t]) for t in range(num_tasks)])
  else:
    jacobian, per_task = jax.vmap(model_vjp)(cotangents)
  head_grads = jax.tree.map(lambda g, t: g[t], per_task, owner_index)
  return TaskGradients(losses, aux, head_grads, jacobian, lambda shared: shared)


def apply_weighting(weighting: Weighting, state: Any, inputs: WeightingInputs,
                    grads: TaskGradients) -> tuple[dict, jnp.ndarray, Any, jnp.ndarray]:
  """(full parameter gradient, effective weights f32[T], new weighting state, Gram f32[T, T]).

  The method sees the Gram matrix of the task gradients (and the gradients themselves if it
  needs them); its weights w give the shared gradient from sum_t w_t g_t, or it returns a
  `Direction` directly.
  """
  gram = gram_matrix(grads.task_grads) if grads.gram is None else grads.gram
  inputs = inputs._replace(gram=gram,
                           grads=grads.task_grads if weighting.needs == "grads" else None)
  result, state = weighting.update(state, inputs)
  if isinstance(result, Direction):
    direction, weights = result.grads, result.weights
  else:
    weights = jax.lax.stop_gradient(result).astype(grads.losses.dtype)
    direction = combine(weights, grads.task_grads)
  shared = grads.combine_shared(direction)
  return merge_params(shared, grads.head_grads), weights, state, gram


# ----------------------------------------------------------------------------------------------
# The Gram matrix of all-Dense trunks without the Jacobian.


def _dense_calls(interceptor: Callable):
  """An `nn.intercept_methods` interceptor that hands every nn.Dense call to `interceptor`."""

  def intercept(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
      return interceptor(next_fun, args, kwargs, context)
    return next_fun(*args, **kwargs)

  return intercept


class DenseTaps(NamedTuple):
  """Where the encoder's shared Dense layers are tapped: a zero perturbation per tapped output,
  whether each tapped layer has a bias, and which Dense calls (in call order) are tapped."""
  zeros: list
  biases: list
  tapped: tuple[bool, ...]


def dense_taps(trunk_fn: Callable, trunk_params: Any) -> DenseTaps | None:
  """The taps if the trunk's parameters `trunk_params` are exactly the kernels and biases of
  Dense layers called once each on [B, D] inputs, else None (J is needed). Dense layers with
  other parameters (a task's gate) are not tapped. Traces the trunk abstractly."""
  ok, calls = [True], []

  def interceptor(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    params = context.module.variables.get("params", {})
    calls.append((args[0].ndim, (y.shape, y.dtype), [id(v) for v in jax.tree.leaves(params)],
                  "bias" in params))
    return y

  def run(params):
    leaves = {id(v) for v in jax.tree.leaves(params)}
    with nn.intercept_methods(_dense_calls(interceptor)):
      trunk_fn(params)
    tapped = [bool(ids) and set(ids) <= leaves for _, _, ids, _ in calls]
    seen = [i for (_, _, ids, _), tap in zip(calls, tapped) if tap for i in ids]
    ok[0] &= len(seen) == len(set(seen)) and set(seen) == leaves and bool(leaves)
    ok[0] &= all(ndim == 2 for (ndim, _, _, _), tap in zip(calls, tapped) if tap)
    ok[0] &= not any(set(ids) & leaves for (_, _, ids, _), tap in zip(calls, tapped) if not tap)
    calls[:] = [(c, tap) for c, tap in zip(calls, tapped)]

  jax.eval_shape(run, trunk_params)
  if not ok[0]:
    return None
  return DenseTaps([jnp.zeros(*out) for (_, out, _, _), tap in calls if tap],
                   [bias for (_, _, _, bias), tap in calls if tap],
                   tuple(tap for _, tap in calls))


def tapped_call(trunk_fn: Callable, trunk_params: Any, taps: list, where: DenseTaps):
  """(Z, (trunk aux, [each tapped Dense layer's input x])), taps[l] added to tapped output l."""
  inputs, calls = [], [0]

  def interceptor(next_fun, args, kwargs, context):
    del context
    y = next_fun(*args, **kwargs)
    call = calls[0]
    calls[0] += 1
    if not where.tapped[call]:
      return y
    inputs.append(args[0])
    return y + taps[len(inputs) - 1]

  with nn.intercept_methods(_dense_calls(interceptor)):
    rep, trunk_aux = trunk_fn(trunk_params)
  return rep, (trunk_aux, inputs)


def dense_gram(inputs: list, outputs: list, biases: list) -> jnp.ndarray:
  """f32[T, T] Gram matrix of the per-task gradients of Dense layers' kernels and biases.

  inputs[l]: x [B, D_in] of layer l; outputs[l]: D [T, B, D_out], each task's cotangent at its
  output; biases[l]: whether it has a bias. Per layer, whichever is cheaper: <K, D_s D_t^T>
  with K = x x^T (+ 1 for the bias), or the layer's Jacobian x^T D_t (and bias rows sum_b D_t).
  """
  gram = 0.0
  for x, d, bias in zip(inputs, outputs, biases):
    x, d = x.astype(jnp.float32), d.astype(jnp.float32)
    (batch, width), (tasks, _, out) = x.shape, d.shape
    if batch * batch * (width + tasks * out) + tasks * tasks * batch * out < (
        tasks * batch * width * out + tasks * tasks * width * out):
      kernel = x @ x.T + (1.0 if bias else 0.0)
      gram = gram + jnp.einsum("sbo,tbo->st", d, jnp.einsum("bc,tco->tbo", kernel, d))
    else:
      jacobian = jnp.einsum("bi,tbo->tio", x, d).reshape(tasks, -1)
      gram = gram + jacobian @ jacobian.T
      if bias:
        bias_rows = d.sum(1)
        gram = gram + bias_rows @ bias_rows.T
  return gram
