"""Manual weighting: fixed, user-given task weights (`config.task_weights`).

A task without labels in the batch (loss 0) gets weight 0, as in every method.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds


class ManualState(NamedTuple):
  weights: jnp.ndarray  # f32[T], the given weights


def make(weights: Sequence[float]) -> Weighting:
  """w_i = weights[i]: e.g. (1.0, 0.5) makes the second task's loss count half."""
  weights = tuple(float(w) for w in weights)
  if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
    raise ValueError(f"manual task weights must be >= 0 and not all 0, got {weights}")

  def init(tasks) -> ManualState:
    num_tasks = len(task_kinds(tasks))
    if num_tasks != len(weights):
      raise ValueError(f"manual weighting has {len(weights)} weights for {num_tasks} tasks")
    return ManualState(jnp.asarray(weights, jnp.float32))

  def update(state: ManualState, inputs: WeightingInputs):
    return jnp.where(labelled(inputs.counts), state.weights, 0.0), state

  return Weighting(init, update)
