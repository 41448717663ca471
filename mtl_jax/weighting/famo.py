"""FAMO: Fast Adaptive Multitask Optimization.

Liu, Feng, Stone and Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023,
https://arxiv.org/abs/2306.03792, Algorithm 1; official code github.com/Cranial-XIX/FAMO
(`famo.py`, `methods/weight_methods.py`), also LibMTL's `weighting/FAMO.py`.

Task logits xi f32[T], z = softmax(xi). With D_i = L_i - min_i + eps (min_i a known lower
bound of L_i, 0 for cross-entropy and squared error), the model minimises
sum_i z_i log(D_i) / c with c = sum_i z_i / D_i held constant (Algorithm 1; the official
`get_weighted_loss`), so

    w_i = z_i / (c D_i),   sum_i w_i = 1.

After the model step the logits take one Adam step (learning rate `lr`, L2 weight decay
`gamma` added to the gradient as in torch's Adam(weight_decay=gamma)) on the gradient
d = J_softmax(xi)^T delta, delta_i = log D_i(before) - log D_i(after) (Algorithm 1; the
official `update`).

Deviation from the official code: it computes L(after) with an extra forward pass of the
updated model on the same batch. Our step is one forward and one backward, so L(after) is the
next step's loss (new parameters, next batch): at each step the logits first move on the delta
between the previous step's losses (kept in the state) and this step's, then the weights come
from the new logits. The delta is therefore noisier (it also holds the batch-to-batch change).
The official trainers also clip the shared gradient norm (max_norm=1); that is the run's
optimizer setting here (`config.optimizer.grad_clip_norm`), not part of the weighting.

Missing labels: a task without labels in the batch gets weight 0 and is left out of c; its
delta is 0 whenever the current or the kept previous loss of that task is not from a labelled
batch, and its previous loss is kept until it has labels again. (Its logit can still move
through the softmax coupling, Adam's momentum and the weight decay.) A step where no task has
a valid delta (the first step) leaves the logits and Adam's state unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds


class FamoState(NamedTuple):
  logits: jnp.ndarray       # f32[T], xi
  adam: Any                 # the logits' optax Adam state
  prev_losses: jnp.ndarray  # f32[T], each task's last loss from a batch with its labels
  prev_valid: jnp.ndarray   # bool[T], whether prev_losses[i] holds such a loss yet


def famo_weights(logits: jnp.ndarray, losses: jnp.ndarray, mask: jnp.ndarray,
                 min_losses: jnp.ndarray, eps: float) -> jnp.ndarray:
  """f32[T] w_i = z_i / (c D_i) over the tasks where `mask` is True (0 elsewhere)."""
  z = jax.nn.softmax(logits)
  ratio = jnp.where(mask, z / (losses - min_losses + eps), 0.0)
  return ratio / jnp.maximum(ratio.sum(), jnp.finfo(ratio.dtype).tiny)


def logit_gradient(logits: jnp.ndarray, delta: jnp.ndarray) -> jnp.ndarray:
  """f32[T] d = J_softmax(logits)^T delta = z * (delta - z . delta)."""
  z = jax.nn.softmax(logits)
  return z * (delta - jnp.dot(z, delta))


def make(lr: float = 0.025, gamma: float = 1e-3, min_losses: float | Sequence[float] = 0.0,
         eps: float = 1e-8) -> Weighting:
  """FAMO's task weights (see the module docstring).

  Args:
    lr: learning rate of the logits' Adam (official default 0.025).
    gamma: L2 weight decay of the logits (official run scripts: 1e-3 for NYUv2, CelebA and
      QM9, 1e-2 for CityScapes).
    min_losses: lower bound of each task's loss, one float for all tasks or one per task.
    eps: added to L_i - min_i inside log and 1/x (official: 1e-8).
  """
  if not lr > 0 or gamma < 0 or not eps > 0:
    raise ValueError(f"famo needs lr > 0, gamma >= 0, eps > 0; got {lr}, {gamma}, {eps}")
  logit_optimizer = optax.chain(optax.add_decayed_weights(gamma), optax.adam(lr))

  def init(tasks) -> FamoState:
    num_tasks = len(task_kinds(tasks))
    if not isinstance(min_losses, (int, float)) and len(min_losses) != num_tasks:
      raise ValueError(f"famo has {len(min_losses)} min_losses for {num_tasks} tasks")
    logits = jnp.zeros((num_tasks,), jnp.float32)
    return FamoState(logits, logit_optimizer.init(logits), jnp.zeros((num_tasks,), jnp.float32),
                     jnp.zeros((num_tasks,), bool))

  def update(state: FamoState, inputs: WeightingInputs):
    floor = jnp.broadcast_to(jnp.asarray(min_losses, jnp.float32), inputs.losses.shape)
    log_gap = lambda losses: jnp.log(losses - floor + eps)
    now = labelled(inputs.counts)
    valid = now & state.prev_valid
    delta = jnp.where(valid, log_gap(state.prev_losses) - log_gap(inputs.losses), 0.0)
    step, adam = logit_optimizer.update(logit_gradient(state.logits, delta), state.adam,
                                        state.logits)
    moved = valid.any()
    logits = jnp.where(moved, optax.apply_updates(state.logits, step), state.logits)
    adam = jax.tree.map(lambda new, old: jnp.where(moved, new, old), adam, state.adam)
    new_state = FamoState(logits, adam, jnp.where(now, inputs.losses, state.prev_losses),
                          state.prev_valid | now)
    return famo_weights(logits, inputs.losses, now, floor, eps), new_state

  return Weighting(init, update)
