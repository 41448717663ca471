"""The weighting interface: a pure (init, update) pair shaped like an optax transformation.

    state = method.init(tasks)                       # Tasks, their kinds, or T
    weights, state = method.update(state, inputs)    # inputs: WeightingInputs of one step

The train step turns `weights` f32[T] into the update with one backward pass (the weights are
the cotangent of the loss vector, so the gradient is sum_i w_i grad L_i). Weights are treated as
constants of the step: no gradient flows through them. The state lives in the optimizer state
(`MultiTaskOptState.weighting`), so one checkpoint restores it and a resumed run is exact.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from mtl_jax.tasks import CLASSIFICATION, Task


class WeightingInputs(NamedTuple):
  """What a method may read at one train step; all arrays, computed over the global batch."""
  losses: jnp.ndarray  # f32[T], each task's mean loss over its labelled examples (0 if none)
  counts: jnp.ndarray  # i32[T], labelled examples per task in the batch
  kpis: jnp.ndarray    # f32[T], accuracy (classification) or mean absolute error (regression)
  key: jnp.ndarray     # a PRNG key that is a function of (seed, step)
  step: jnp.ndarray    # i32[], the train step (0-based)


class Weighting(NamedTuple):
  """A task-weighting method: pure `init` and `update` (see the module docstring)."""
  init: Callable[[Sequence[Task | str] | int], Any]
  update: Callable[[Any, WeightingInputs], tuple[jnp.ndarray, Any]]


def task_kinds(tasks: Sequence[Task | str] | int) -> tuple[str, ...]:
  """The kind of each task ("classification" | "regression"); an int T means T classifications.

  Methods need only the number of tasks and their kinds, so standalone users may pass either.
  """
  if isinstance(tasks, int):
    return (CLASSIFICATION,) * tasks
  return tuple(t if isinstance(t, str) else t.kind for t in tasks)


def labelled(counts: jnp.ndarray) -> jnp.ndarray:
  """bool[T]: which tasks have at least one label in the batch."""
  return counts > 0


def make_inputs(losses, counts=None, kpis=None, key=None, step=0) -> WeightingInputs:
  """WeightingInputs with defaults for what a caller does not have (all tasks labelled)."""
  losses = jnp.asarray(losses, jnp.float32)
  counts = jnp.ones(losses.shape, jnp.int32) if counts is None else jnp.asarray(counts, jnp.int32)
  kpis = jnp.zeros(losses.shape, jnp.float32) if kpis is None else jnp.asarray(kpis, jnp.float32)
  key = jax.random.PRNGKey(0) if key is None else key
  return WeightingInputs(losses, counts, kpis, key, jnp.asarray(step, jnp.int32))
