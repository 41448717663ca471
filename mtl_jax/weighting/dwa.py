"""Dynamic Weight Average: tasks whose loss falls slowly get more weight.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019,
https://arxiv.org/abs/1803.10704 (the "Dynamic Weight Average" equation); official code
https://github.com/lorenmt/mtan (`lambda_weight` from the epoch averages `avg_cost`).

    r_i = L_i(t-1) / L_i(t-2),   w_i = T exp(r_i / temperature) / sum_j exp(r_j / temperature)

where L_i(t) is task i's average training loss over window t (an epoch in the paper), T the
number of tasks, and the weights sum to T. Until two windows are complete, w_i = 1 (the
official code's first two epochs).

A window is `window` updates long: the run's `steps_per_epoch` by default, so a window is an
epoch as in the paper; without it (standalone use) DEFAULT_WINDOW updates. A window's average
counts only the steps where the task had labels; a task without any labels in a whole window
keeps its previous average (so its ratio tends to 1). A ratio whose older average is 0 is 1.
A task without labels in the batch (loss 0) gets weight 0 at that step; the others keep theirs
(not renormalised).
The weights of a step use the windows completed before it; its losses go into the current one.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds

DEFAULT_WINDOW = 100


class DWAState(NamedTuple):
  loss_sum: jnp.ndarray          # f32[T], sum of labelled losses in the current window
  loss_count: jnp.ndarray        # i32[T], labelled steps in the current window
  window_steps: jnp.ndarray      # i32[], updates so far in the current window
  last_average: jnp.ndarray      # f32[T], L_i(t-1), the last complete window's average
  previous_average: jnp.ndarray  # f32[T], L_i(t-2), the one before
  windows: jnp.ndarray           # i32[], complete windows so far


def dwa_weights(last: jnp.ndarray, previous: jnp.ndarray, temperature: float) -> jnp.ndarray:
  """f32[T]: T softmax(r / temperature) with r = last / previous (1 where previous is 0)."""
  ratio = jnp.where(previous > 0, last / jnp.where(previous > 0, previous, 1.0), 1.0)
  return last.shape[0] * jax.nn.softmax(ratio / temperature)


def make(temperature: float = 2.0, window: int | None = None,
         steps_per_epoch: int | None = None) -> Weighting:
  """Dynamic weight average (see the module docstring).

  Args:
    temperature: the softmax temperature (2 in the paper); larger gives more even weights.
    window: updates per loss-averaging window; defaults to `steps_per_epoch`.
    steps_per_epoch: filled from the run; used when `window` is not given.
  """
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  if window is None:
    window = steps_per_epoch or DEFAULT_WINDOW
  if int(window) != window or window < 1:
    raise ValueError(f"window must be a positive integer, got {window}")
  window, temperature = int(window), float(temperature)

  def init(tasks) -> DWAState:
    zeros = jnp.zeros((len(task_kinds(tasks)),), jnp.float32)
    zero = jnp.zeros((), jnp.int32)
    return DWAState(zeros, jnp.zeros(zeros.shape, jnp.int32), zero, zeros, zeros, zero)

  def update(state: DWAState, inputs: WeightingInputs):
    has_labels = labelled(inputs.counts)
    weights = jnp.where(state.windows >= 2,
                        dwa_weights(state.last_average, state.previous_average, temperature),
                        jnp.ones_like(state.last_average))
    weights = jnp.where(has_labels, weights, 0.0)
    loss_sum = state.loss_sum + jnp.where(has_labels, inputs.losses, 0.0)
    loss_count = state.loss_count + has_labels
    window_steps = state.window_steps + 1
    closes = window_steps >= window
    average = jnp.where(loss_count > 0, loss_sum / jnp.maximum(loss_count, 1),
                        state.last_average)
    new_state = DWAState(
        loss_sum=jnp.where(closes, 0.0, loss_sum),
        loss_count=jnp.where(closes, 0, loss_count),
        window_steps=jnp.where(closes, 0, window_steps),
        last_average=jnp.where(closes, average, state.last_average),
        previous_average=jnp.where(closes, state.last_average, state.previous_average),
        windows=state.windows + closes)
    return weights, new_state

  return Weighting(init, update)
