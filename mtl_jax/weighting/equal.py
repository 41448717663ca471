"""Equal weighting: every task's loss counts once, the plain sum of task losses."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting


class EqualState(NamedTuple):
  """Equal weighting keeps only the number of tasks, as a shaped array."""
  weights: jnp.ndarray  # f32[T], all ones


def make() -> Weighting:
  """w_i = 1 for every task i."""

  def init(num_tasks: int) -> EqualState:
    return EqualState(jnp.ones((num_tasks,), jnp.float32))

  def update(state: EqualState, **_):
    return state.weights, state

  return Weighting(init, update)
