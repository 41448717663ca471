"""Auto-λ: task weights learned by a one-step look-ahead on a validation batch.

Liu, James, Davison and Johns, "Auto-Lambda: Disentangling Dynamic Task
Relationships", TMLR 2022, https://arxiv.org/abs/2202.03091 (the one-step look-ahead
approximation of its bi-level problem; equation numbers not checked here); official code
github.com/lorenmt/auto-lambda (`auto_lambda.py`: `virtual_step`, `unrolled_backward`,
`compute_hessian`; `trainer_dense.py` for the defaults).

The weights lambda are parameters trained, at each step and before the model's update, to lower
the primary tasks' validation loss after one virtual SGD step of the model:

    theta'(lambda) = theta - alpha sum_i lambda_i grad L_i^train(theta),
    lambda <- Adam step on  d/dlambda_i sum_{p primary} L_p^val(theta'(lambda))
                          = -alpha <grad L_i^train(theta), grad L^val_pri(theta')>,

alpha the model's current learning rate; then the model trains on sum_i lambda_i L_i with the
updated lambda (heads included). The official code approximates the inner product by a central
finite difference of the training losses along grad L^val (its `compute_hessian`, step
0.01 / ||grad L^val||); here it is exact: J d as the transpose of the virtual step's own VJP
c -> J^T c (`meta_gradient`).
Defaults of the official code: lambda starts at `init_weight` = 0.1, Adam at
`meta_learning_rate` = 1e-4 (NYUv2; 3e-5 CityScapes, 3e-4 CIFAR-100), every task primary.

Cost: per step, besides the model's own forward and backward, a forward and backward on the
training batch (the virtual step), one on the validation batch, and the transpose of that
backward (see the README's cost table).

Deviations: the look-ahead batch is drawn from the validation split (the official trainers draw
it from the training set in another order), uniformly with replacement by (seed, step)
(`Weighting.val_batch`); the virtual step is plain SGD, as the official code takes it for Adam,
without the momentum buffer and weight decay it adds for SGD (optimizer-specific state); the
look-ahead's forward passes run in training mode (dropout on, as the official copy of the model
is), their batch statistics discarded.

Missing labels: a task without labels in the training batch gets weight 0 this step, is left
out of the virtual step, and keeps its lambda and Adam moments (`keep_unlabelled`); a primary
task without labels in the validation batch has validation loss 0 and contributes nothing.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from mtl_jax.weighting.base import (STANDALONE_LEARNING_RATE, Lookahead, Weighting,
                                   WeightingInputs, keep_unlabelled, labelled)


class AutoLambdaState(NamedTuple):
  weights: jnp.ndarray  # f32[T], lambda
  primary: jnp.ndarray  # f32[T], 1 for the primary tasks, whose validation loss lambda lowers
  adam: Any             # the Adam state of lambda


def meta_gradient(lookahead: Lookahead, weights: jnp.ndarray, primary: jnp.ndarray,
                  alpha: jnp.ndarray) -> jnp.ndarray:
  """f32[T]: d/dlambda of the primary validation loss after the virtual step theta'(lambda),
  -alpha <grad L_i^train(theta), grad L^val_pri(theta')>."""
  params = lookahead.params
  losses, backward = jax.vjp(lookahead.train_losses, params)  # c -> J^T c
  (grads,) = backward(weights.astype(losses.dtype))
  virtual = jax.tree.map(lambda p, g: p - alpha * g.astype(p.dtype), params, grads)
  val_grad = jax.grad(lambda p: jnp.dot(primary, lookahead.val_losses(p)))(virtual)
  # J d as the transpose of the linear c -> J^T c (the VJP of the VJP): reverse mode only, so
  # models with custom VJPs (mtl_jax.models.pooling) work, where a JVP would not.
  _, transpose = jax.vjp(lambda c: backward(c)[0], jnp.zeros_like(losses))
  (alignment,) = transpose(val_grad)
  return -alpha * alignment


def make(init_weight: float = 0.1, meta_learning_rate: float = 1e-4,
         primary_tasks: Sequence[str] | None = None,
         learning_rate: Callable[[Any], Any] | float | None = None) -> Weighting:
  """Auto-λ's learned weights (see the module docstring).

  Args:
    init_weight: every lambda_i at the start (official `autol_init`, 0.1).
    meta_learning_rate: Adam's learning rate for lambda (official `autol_lr`, 1e-4).
    primary_tasks: the names of the tasks whose validation loss lambda lowers (None: all).
    learning_rate: alpha of the virtual step: the run's schedule (step -> rate, filled from
      the run's context) or a constant; standalone default 1e-3.
  """
  if not meta_learning_rate > 0:
    raise ValueError(f"auto_lambda needs meta_learning_rate > 0, got {meta_learning_rate}")
  if learning_rate is None:
    learning_rate = STANDALONE_LEARNING_RATE
  schedule = learning_rate if callable(learning_rate) else (lambda step: learning_rate)
  meta_tx = optax.adam(meta_learning_rate)

  def init(tasks) -> AutoLambdaState:
    if isinstance(tasks, int):
      names = tuple(str(i) for i in range(tasks))
    else:
      names = tuple(t if isinstance(t, str) else t.name for t in tasks)
    chosen = names if primary_tasks is None else tuple(primary_tasks)
    unknown = sorted(set(chosen) - set(names))
    if unknown or not chosen:
      raise ValueError(f"auto_lambda primary_tasks must name some of the tasks {names}; got "
                       f"{tuple(chosen)}")
    weights = jnp.full((len(names),), init_weight, jnp.float32)
    primary = jnp.asarray([float(n in chosen) for n in names], jnp.float32)
    return AutoLambdaState(weights, primary, meta_tx.init(weights))

  def update(state: AutoLambdaState, inputs: WeightingInputs):
    if inputs.lookahead is None:
      raise ValueError("auto_lambda reads a validation batch: inputs.lookahead is missing")
    mask = labelled(inputs.counts)
    alpha = jnp.asarray(schedule(inputs.step), jnp.float32)
    gradient = meta_gradient(inputs.lookahead, jnp.where(mask, state.weights, 0.0),
                             state.primary, alpha)
    updates, adam = meta_tx.update(gradient, state.adam, state.weights)
    weights, adam = keep_unlabelled((optax.apply_updates(state.weights, updates), adam),
                                    (state.weights, state.adam), mask)
    return jnp.where(mask, weights, 0.0), AutoLambdaState(weights, state.primary, adam)

  return Weighting(init, update, val_batch=True)
