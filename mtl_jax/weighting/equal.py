"""Equal weighting: every task's loss counts once, the plain sum of task losses.

A task without labels in the batch (loss 0) gets weight 0, as in every method.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds


class EqualState(NamedTuple):
  weights: jnp.ndarray  # f32[T], all ones


def make() -> Weighting:
  """w_i = 1 for every task i with labels in the batch, 0 for the others."""

  def init(tasks) -> EqualState:
    return EqualState(jnp.ones((len(task_kinds(tasks)),), jnp.float32))

  def update(state: EqualState, inputs: WeightingInputs):
    return jnp.where(labelled(inputs.counts), state.weights, 0.0), state

  return Weighting(init, update)
