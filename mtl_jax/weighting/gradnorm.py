"""GradNorm: task weights trained to balance the norms of the task gradients.

Chen, Badrinarayanan, Lee and Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss
Balancing in Deep Multitask Networks", ICML 2018, https://arxiv.org/abs/1711.02257,
Algorithm 1. No official code was released; LibMTL's `weighting/GradNorm.py` re-implements it.

Learnable weights w f32[T] start at 1 and are kept summing to T. With n_i = ||g_i|| the norm of
task i's unweighted gradient, L~_i = L_i(t) / L_i(0) and r_i = L~_i / mean_j L~_j (the relative
inverse training rate), each step w takes one optimizer step on the gradient loss

    L_grad(w) = sum_i | w_i n_i - mean_j(w_j n_j) r_i^alpha |,

whose target mean_j(w_j n_j) r_i^alpha is held constant (as in the paper), so
dL_grad / dw_i = sign(w_i n_i - target_i) n_i (0 for a task exactly on its target). Then w
is floored at MIN_WEIGHT and renormalised to sum to T (Algorithm 1). The model's step uses the
weights from before this update: the model and the weights step from the same point, as in
Algorithm 1.

Gradient norms: n_i = sqrt(G_ii) from the Gram matrix of the task gradients of all shared
parameters (grad_wrt="params"), or of the shared representation (grad_wrt="rep", allowed, as in
LibMTL). The paper takes only the last shared layer W, to save computation; with the Gram
matrix at hand there is nothing to save.

The weights are trained by the run's optimizer (`optimizer`, as the paper trains w with the
network's optimizer): the state holds w and `optimizer.init(w)`. Standalone, without a run
optimizer, w uses `optax.adam(1e-3)`. The run optimizer's weight decay and clipping apply to w.

L_i(0) is each task's loss at its first step with labels (and a positive loss); until then
L~_i = 1. LibMTL instead weighs equally during the first epoch and takes its mean losses as
L(0); LibMTL also parameterises w = T softmax(s), where we follow the paper's renormalisation.
Deviation: the paper does not say how w stays positive; the floor MIN_WEIGHT does it here.

Missing labels: a task without labels in the batch gets weight 0, is left out of the means of
L_grad's target, and keeps its w, its L_i(0) and its slice of the optimizer state; the
renormalisation keeps the total of the labelled tasks' weights, so the others' stay as they are.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from mtl_jax.weighting.base import (Weighting, WeightingInputs, keep_unlabelled, labelled,
                                    task_kinds, weight_optimizer)

MIN_WEIGHT = 1e-4  # floor of w before renormalising to sum T


class GradNormState(NamedTuple):
  weights: jnp.ndarray         # f32[T], w, summing to T
  opt_state: Any               # the optimizer's state for w
  initial_losses: jnp.ndarray  # f32[T], L_i(0)
  has_initial: jnp.ndarray     # bool[T], whether initial_losses[i] is set


def gradnorm_targets(weights: jnp.ndarray, norms: jnp.ndarray, loss_ratios: jnp.ndarray,
                     mask: jnp.ndarray, alpha: float) -> jnp.ndarray:
  """f32[T]: mean_j(w_j n_j) r_i^alpha, r_i = L~_i / mean_j L~_j, means over `mask` (0 outside).

  Args:
    weights: f32[T], w.
    norms: f32[T], n_i = ||g_i||.
    loss_ratios: f32[T], L~_i = L_i(t) / L_i(0).
    mask: bool[T], the tasks with labels.
    alpha: the asymmetry.
  """
  count = jnp.maximum(mask.sum(), 1)
  mean_norm = jnp.where(mask, weights * norms, 0.0).sum() / count
  mean_ratio = jnp.where(mask, loss_ratios, 0.0).sum() / count
  rate = loss_ratios / jnp.maximum(mean_ratio, jnp.finfo(jnp.float32).tiny)
  return jnp.where(mask, mean_norm * rate**alpha, 0.0)


def gradnorm_loss(weights: jnp.ndarray, norms: jnp.ndarray, targets: jnp.ndarray,
                  mask: jnp.ndarray) -> jnp.ndarray:
  """f32[]: L_grad = sum_i |w_i n_i - target_i| over the masked tasks."""
  return jnp.where(mask, jnp.abs(weights * norms - targets), 0.0).sum()


def gradnorm_gradient(weights: jnp.ndarray, norms: jnp.ndarray, targets: jnp.ndarray,
                      mask: jnp.ndarray) -> jnp.ndarray:
  """f32[T]: dL_grad/dw_i = sign(w_i n_i - target_i) n_i (0 on target: the subgradient 0)."""
  return jnp.where(mask, jnp.sign(weights * norms - targets) * norms, 0.0)


def renormalise(new_weights: jnp.ndarray, old_weights: jnp.ndarray,
                mask: jnp.ndarray) -> jnp.ndarray:
  """f32[T]: the masked entries floored at MIN_WEIGHT and scaled to their old total; others old."""
  floored = jnp.where(mask, jnp.maximum(new_weights, MIN_WEIGHT), 0.0)
  total = jnp.where(mask, old_weights, 0.0).sum()
  return jnp.where(mask, floored * total / jnp.maximum(floored.sum(), MIN_WEIGHT), old_weights)


def make(alpha: float = 1.5, optimizer: optax.GradientTransformation | None = None) -> Weighting:
  """GradNorm's task weights (see the module docstring).

  Args:
    alpha: the asymmetry, the strength of the pull toward equal training rates (paper and
      LibMTL default 1.5; 0 equalises the weighted gradient norms).
    optimizer: trains w; the run's optimizer when built by `weighting.get` in a run, else
      `optax.adam(1e-3)`.
  """
  if alpha < 0:
    raise ValueError(f"gradnorm needs alpha >= 0, got {alpha}")
  tx = weight_optimizer(optimizer)

  def init(tasks) -> GradNormState:
    num_tasks = len(task_kinds(tasks))
    weights = jnp.ones((num_tasks,), jnp.float32)
    return GradNormState(weights, tx.init(weights), jnp.zeros((num_tasks,), jnp.float32),
                         jnp.zeros((num_tasks,), bool))

  def update(state: GradNormState, inputs: WeightingInputs):
    has_labels = labelled(inputs.counts)
    losses = inputs.losses
    first = has_labels & ~state.has_initial & (losses > 0)
    initial_losses = jnp.where(first, losses, state.initial_losses)
    has_initial = state.has_initial | first
    ratios = jnp.where(has_initial, losses / jnp.where(has_initial, initial_losses, 1.0), 1.0)
    norms = jnp.sqrt(jnp.maximum(jnp.diag(inputs.gram), 0.0))
    w = state.weights
    targets = gradnorm_targets(w, norms, ratios, has_labels, alpha)
    grad = gradnorm_gradient(w, norms, targets, has_labels)
    updates, opt_state = tx.update(grad, state.opt_state, w)
    new_w = renormalise(optax.apply_updates(w, updates), w, has_labels)
    opt_state = keep_unlabelled(opt_state, state.opt_state, has_labels)
    new_state = GradNormState(new_w, opt_state, initial_losses, has_initial)
    return jnp.where(has_labels, w, 0.0), new_state

  return Weighting(init, update, needs="gram", allows_rep=True)
