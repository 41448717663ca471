"""Equal weighting: every task's loss counts once, the plain sum of task losses."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, task_kinds


class EqualState(NamedTuple):
  weights: jnp.ndarray  # f32[T], all ones


def make() -> Weighting:
  """w_i = 1 for every task i."""

  def init(tasks) -> EqualState:
    return EqualState(jnp.ones((len(task_kinds(tasks)),), jnp.float32))

  def update(state: EqualState, inputs: WeightingInputs):
    del inputs
    return state.weights, state

  return Weighting(init, update)
