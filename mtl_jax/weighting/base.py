"""The weighting interface: a pure (init, update) pair shaped like an optax transformation.

    state = method.init(tasks)                       # Tasks, their kinds, or T
    weights, state = method.update(state, inputs)    # inputs: WeightingInputs of one step

The train step turns `weights` f32[T] into the update with one backward pass (the weights are
the cotangent of the loss vector, so the gradient is sum_i w_i grad L_i). Weights are treated as
constants of the step: no gradient flows through them. The state lives in the optimizer state
(`MultiTaskOptState.weighting`), so one checkpoint restores it and a resumed run is exact.

Gradient methods say what else they read with `Weighting.needs`:
- "losses": losses, counts, KPIs only (the loss-weighting family);
- "gram": also `inputs.gram`, the T x T Gram matrix G = J J^T of the per-task gradients J of
  the shared parameters (or of the shared representation, in the representation mode). Most
  gradient methods (MGDA, PCGrad, CAGrad, Nash-MTL, UPGrad, ...) combine the task gradients
  linearly, d = sum_i w_i g_i, with w a function of G alone, so they return weights too;
- "grads": also `inputs.grads`, the per-task gradients themselves (a pytree whose leaves have a
  leading task axis T). A method that is not a linear combination (GradDrop's per-coordinate
  masking) returns a `Direction` in place of the weights.
Rows and columns of G (and rows of J) of tasks without labels in the batch are zero; a
gradient method leaves such tasks out of its combination (weight 0), never NaN.
"""

from __future__ import annotations

import functools
import operator
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
  gram: jnp.ndarray | None = None  # f32[T, T], J J^T (methods with needs "gram" or "grads")
  grads: Any = None    # pytree of [T, ...] per-task gradients (methods with needs "grads")


class Direction(NamedTuple):
  """An update direction that is not a linear combination of the task gradients."""
  grads: Any            # pytree like one task's gradient: the combined gradient
  weights: jnp.ndarray  # f32[T], effective weights to log as "weight/<task>"


NEEDS = ("losses", "gram", "grads")


class Weighting(NamedTuple):
  """A task-weighting method: pure `init` and `update` (see the module docstring).

  `needs`: "losses", "gram" or "grads" (see the module docstring). `allows_rep`: whether the
  method may run on gradients of the shared representation instead of the shared parameters
  (`weighting_kwargs.grad_wrt = "rep"`, as MGDA-UB does).
  """
  init: Callable[[Sequence[Task | str] | int], Any]
  update: Callable[[Any, WeightingInputs], tuple[jnp.ndarray | Direction, Any]]
  needs: str = "losses"
  allows_rep: bool = False


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


def make_inputs(losses, counts=None, kpis=None, key=None, step=0, gram=None,
                grads=None) -> WeightingInputs:
  """WeightingInputs with defaults for what a caller does not have (all tasks labelled).

  With `grads` given as one [T, D] matrix (or a pytree of [T, ...]) and no `gram`, the Gram
  matrix is computed from them.
  """
  losses = jnp.asarray(losses, jnp.float32)
  if grads is not None and gram is None:
    gram = gram_matrix(grads)
  counts = jnp.ones(losses.shape, jnp.int32) if counts is None else jnp.asarray(counts, jnp.int32)
  kpis = jnp.zeros(losses.shape, jnp.float32) if kpis is None else jnp.asarray(kpis, jnp.float32)
  key = jax.random.PRNGKey(0) if key is None else key
  return WeightingInputs(losses, counts, kpis, key, jnp.asarray(step, jnp.int32),
                         None if gram is None else jnp.asarray(gram, jnp.float32), grads)


def gram_matrix(grads: Any) -> jnp.ndarray:
  """f32[T, T] G_st = <g_s, g_t> summed over every leaf of per-task gradients [T, ...]."""
  leaves = jax.tree.leaves(grads)
  flat = [leaf.reshape(leaf.shape[0], -1).astype(jnp.float32) for leaf in leaves]
  return sum(f @ f.T for f in flat)


def sum_over_tasks(x: jnp.ndarray) -> jnp.ndarray:
  """x[0] + x[1] + ... over the leading task axis of a [T, ...] array, as T - 1 adds.

  Not `x.sum(0)`: XLA:CPU (jax 0.10) hands a reduction over a leading axis to a YNNPACK
  fusion about 70x slower than these adds (13 ms against 0.2 ms for [8, 784, 256]).
  """
  return functools.reduce(operator.add, [x[i] for i in range(x.shape[0])])


def row_sums(x: jnp.ndarray) -> jnp.ndarray:
  """[T, ...] -> [T]: the sum of each task's row, as a product with a vector of ones.

  XLA:CPU (jax 0.10) reduces a [8, 200704] array row by row about 2x slower than it
  multiplies it by a vector.
  """
  flat = x.reshape(x.shape[0], -1)
  return flat @ jnp.ones((flat.shape[1],), flat.dtype)


def combine(weights: jnp.ndarray, grads: Any) -> Any:
  """sum_i w_i g_i for per-task gradients [T, ...]: the direction a weighting stands for."""
  return jax.tree.map(lambda g: jnp.tensordot(weights.astype(g.dtype), g, axes=1), grads)
