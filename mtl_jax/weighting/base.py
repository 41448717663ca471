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
A method that learns its weights by looking ahead (Auto-λ) also sets `Weighting.val_batch`: each
step then draws a batch of the validation split, by (seed, step) so that a resumed run draws the
same, inside the same jit-compiled step, and the method reads `inputs.lookahead` (a
`Lookahead`): the per-task losses on the training batch and on that validation batch as
functions of the trainable parameters, at which it may take gradients, JVPs or a virtual step.
The loop supplies it for in-memory datasets (`train_and_evaluate`); the image trainer refuses
such methods.
Rows and columns of G (and rows of J) of tasks without labels in the batch are zero; a
gradient method leaves such tasks out of its combination. Every method, loss-based ones too,
gives a task without labels in the batch weight 0, never NaN (tests/test_weighting_properties.py
checks this and the other shared properties for every registered method).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, NamedTuple, Sequence

import flax
import jax
import jax.numpy as jnp
import optax

from mtl_jax.tasks import CLASSIFICATION, REGRESSION, Task


@flax.struct.dataclass
class Lookahead:
  """The model's losses as functions of its trainable parameters, for `Weighting.val_batch`.

  A pytree whose only leaves are `params`: the functions are static, so a jitted update that
  receives one compiles once per pair of functions.
  """
  params: Any  # the trainable parameters of this step
  # params -> f32[T] on this step's training batch, and on a validation batch
  train_losses: Callable[[Any], jnp.ndarray] = flax.struct.field(pytree_node=False)
  val_losses: Callable[[Any], jnp.ndarray] = flax.struct.field(pytree_node=False)


class WeightingInputs(NamedTuple):
  """What a method may read at one train step; all arrays, computed over the global batch."""
  losses: jnp.ndarray  # f32[T], each task's mean loss over its labelled examples (0 if none)
  counts: jnp.ndarray  # i32[T], labelled examples per task in the batch
  kpis: jnp.ndarray    # f32[T], an error (kinds in ERROR_KINDS, e.g. regression MAE) or an
                       # accuracy in [0, 1] (every other kind); see `error_kpis`
  key: jnp.ndarray     # a PRNG key that is a function of (seed, step)
  step: jnp.ndarray    # i32[], the train step (0-based)
  gram: jnp.ndarray | None = None  # f32[T, T], J J^T (methods with needs "gram" or "grads")
  grads: Any = None    # pytree of [T, ...] per-task gradients (methods with needs "grads")
  lookahead: Lookahead | None = None  # methods with `val_batch`


class Direction(NamedTuple):
  """An update direction that is not a linear combination of the task gradients."""
  grads: Any            # pytree like one task's gradient: the combined gradient
  weights: jnp.ndarray  # f32[T], effective weights to log as "weight/<task>"


NEEDS = ("losses", "gram", "grads")


class Weighting(NamedTuple):
  """A task-weighting method: pure `init` and `update` (see the module docstring).

  `needs`: "losses", "gram" or "grads" (see the module docstring). `allows_rep`: whether the
  method may run on gradients of the shared representation instead of the shared parameters
  (`weighting_kwargs.grad_wrt = "rep"`, as MGDA-UB does). `rep_only`: the method is defined on
  the representation gradients alone (it reads their batch axis, as NTKMTL-SR does), so the
  run takes them by default and refuses `grad_wrt = "params"`. `grad_state`: True when
  `init(tasks, grads_like=...)` needs the shapes of the per-task gradients [T, ...] (a pytree
  of arrays or jax.ShapeDtypeStruct like `inputs.grads`), because the state keeps
  gradient-shaped buffers, e.g. MoCo's tracked gradients (see `gradient_buffers`).
  """
  init: Callable[..., Any]  # init(tasks) or, with grad_state, init(tasks, grads_like=...)
  update: Callable[[Any, WeightingInputs], tuple[jnp.ndarray | Direction, Any]]
  needs: str = "losses"
  allows_rep: bool = False
  grad_state: bool = False
  rep_only: bool = False
  val_batch: bool = False


# Task kinds whose KPI is an error (lower is better, unbounded), e.g. regression's mean absolute
# error; every other kind ("classification", "binary", ...) has an accuracy KPI in [0, 1].
ERROR_KINDS = frozenset({REGRESSION, "depth", "normals"})


def task_kinds(tasks: Sequence[Task | str] | int) -> tuple[str, ...]:
  """The kind of each task (e.g. "classification", "binary", "regression"); an int T means T
  classifications.

  Methods need only the number of tasks and their kinds, so standalone users may pass Task
  objects, kind strings or T.
  """
  if isinstance(tasks, int):
    return (CLASSIFICATION,) * tasks
  return tuple(t if isinstance(t, str) else t.kind for t in tasks)


def error_kpis(tasks: Sequence[Task | str] | int) -> tuple[bool, ...]:
  """Per task: True if its KPI is an error (kind in ERROR_KINDS, lower is better), False if it
  is an accuracy in [0, 1] (every other kind, "binary" included). Methods that branch on a
  task's kind branch on this, so a new kind needs only ERROR_KINDS."""
  return tuple(kind in ERROR_KINDS for kind in task_kinds(tasks))


def labelled(counts: jnp.ndarray) -> jnp.ndarray:
  """bool[T]: which tasks have at least one label in the batch."""
  return counts > 0


def make_inputs(losses, counts=None, kpis=None, key=None, step=0, gram=None, grads=None,
                lookahead=None) -> WeightingInputs:
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
                         None if gram is None else jnp.asarray(gram, jnp.float32), grads,
                         lookahead)


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


# Helpers shared by several methods. A helper used by one method stays in its file; one that a
# second method needs moves here (or to solvers.py if it is a solver), never imported from a
# sibling method.


def log_loss_weights(losses: jnp.ndarray, mask: jnp.ndarray, eps: float) -> jnp.ndarray:
  """f32[T]: d/dL_i sum_i log(max(L_i, 0) + eps) = 1 / (max(L_i, 0) + eps) where `mask`, else 0
  (SI's weights; the factor `log_losses=True` puts on each task gradient).

  Args:
    losses: f32[T], the task losses.
    mask: bool[T], the tasks with labels in the batch.
    eps: added to each loss, guarding 1 / 0.
  """
  return jnp.where(mask, 1.0 / (jnp.maximum(losses, 0.0) + eps), 0.0)


ZERO_NTK = 1e-20  # an NTK eigenvalue <= this times the largest counts as a zero gradient


def ntk_ratios(eigenvalues: jnp.ndarray, mask: jnp.ndarray, gamma: float) -> jnp.ndarray:
  """f32[T]: (sum_j lambda_j / lambda_i)^gamma over the masked tasks whose NTK eigenvalue
  lambda_i is nonzero, 0 elsewhere (NTKMTL and NTKMTL-SR, their Eq. for the task weights)."""
  eigenvalues = jnp.where(mask, jnp.maximum(eigenvalues, 0.0), 0.0)
  live = mask & (eigenvalues > ZERO_NTK * jnp.max(eigenvalues))
  ratios = eigenvalues.sum() / jnp.where(live, eigenvalues, 1.0)
  return jnp.where(live, ratios**gamma, 0.0)


def frobenius_norm(gram: jnp.ndarray) -> jnp.ndarray:
  """f32[]: ||G||_F without overflow for large entries (Nash-MTL, FairGrad)."""
  scale = jnp.max(jnp.abs(gram))
  safe = jnp.where(scale > 0, scale, 1.0)
  return safe * jnp.sqrt(jnp.sum((gram / safe) ** 2)) * (scale > 0)


def clip_factor(squared_norm: jnp.ndarray, max_norm: float) -> jnp.ndarray:
  """f32[]: min(1, max_norm / (||d|| + 1e-6)) for ||d||^2 = `squared_norm`, the factor torch's
  clip_grad_norm_ applies to an update d; 1 when max_norm is 0 (no clipping). The official
  codes of Nash-MTL, FairGrad and SDMGrad clip the shared update so."""
  if max_norm <= 0:
    return jnp.ones((), jnp.float32)
  norm = jnp.sqrt(jnp.maximum(squared_norm, 0.0))
  return jnp.minimum(1.0, max_norm / (norm + 1e-6))


def task_orders(key: jnp.ndarray, num_tasks: int) -> jnp.ndarray:
  """i32[T, T]: row i is the random order in which task i visits the tasks (itself included;
  callers skip it). PCGrad, GradVac."""
  keys = jax.random.split(key, num_tasks)
  return jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(keys)


# Learnable weighting parameters (Uncertainty, GradNorm, IMTL-L) train with the run's optimizer;
# standalone, without one, with Adam at this learning rate.
STANDALONE_LEARNING_RATE = 1e-3


def weight_optimizer(
    optimizer: optax.GradientTransformation | None) -> optax.GradientTransformation:
  """The run's `optimizer`, or optax.adam(STANDALONE_LEARNING_RATE) when there is none."""
  return optax.adam(STANDALONE_LEARNING_RATE) if optimizer is None else optimizer


def keep_unlabelled(new_tree, old_tree, has_labels: jnp.ndarray):
  """`new_tree` with the entries of unlabelled tasks taken from `old_tree` in every [T] leaf.

  For learnable per-task parameters and their optimizer state: leaves shaped like
  `has_labels` (f32[T] parameters, Adam's moments) keep the old entries of the tasks without
  labels; other leaves (Adam's step count) take the new value.
  """
  def select(new, old):
    if jnp.shape(new) == has_labels.shape:
      return jnp.where(has_labels, new, old)
    return new
  return jax.tree.map(select, new_tree, old_tree)


def preference(pref_vector: Sequence[float] | None, mask: jnp.ndarray) -> jnp.ndarray:
  """f32[T]: the preference p over the tasks in `mask` (uniform 1/#mask by default), 0
  elsewhere (UPGrad, DualProj)."""
  if pref_vector is None:
    return jnp.where(mask, 1.0, 0.0) / jnp.maximum(mask.sum(), 1)
  return jnp.where(mask, jnp.asarray(pref_vector, jnp.float32), 0.0)


def check_dual_cone_hyperparameters(name: str, pref_vector: Sequence[float] | None,
                                    norm_eps: float, reg_eps: float) -> None:
  """Raises ValueError for a bad preference vector or epsilon of UPGrad or DualProj."""
  if not norm_eps >= 0 or not reg_eps > 0:
    raise ValueError(f"{name} needs norm_eps >= 0 and reg_eps > 0; got {norm_eps}, {reg_eps}")
  if pref_vector is not None and min(pref_vector) < 0:
    raise ValueError(f"{name} needs pref_vector >= 0; got {tuple(pref_vector)}")


def check_preference_length(name: str, pref_vector: Sequence[float] | None,
                            num_tasks: int) -> None:
  """Raises ValueError when the preference vector does not have one entry per task."""
  if pref_vector is not None and len(pref_vector) != num_tasks:
    raise ValueError(f"{name} has {len(pref_vector)} pref_vector entries for {num_tasks} tasks")


def gradient_buffers(grads_like: Any, num_tasks: int, method: str) -> Any:
  """A float32 zero pytree shaped like the per-task gradients `grads_like` ([T, ...] leaves),
  or None without `grads_like`: the state of a method with `grad_state` (MoCo, DB-MTL,
  ExcessMTL)."""
  if grads_like is None:
    return None
  leaves = jax.tree.leaves(grads_like)
  if not leaves or any(leaf.shape[:1] != (num_tasks,) for leaf in leaves):
    raise ValueError(f"{method}: grads_like must have leaves with a leading axis of "
                     f"{num_tasks} tasks")
  return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, jnp.float32), grads_like)


def require_buffers(buffers: Any, method: str) -> None:
  """Raises if a method that keeps gradient-shaped state was initialised without grads_like."""
  if buffers is None:
    raise ValueError(f"{method} keeps per-task gradients in its state: build the state with "
                     f"init(tasks, grads_like=...), a pytree shaped like inputs.grads")


def scale_rows(scales: jnp.ndarray, grads: Any) -> Any:
  """[T, ...] pytree: row i of every leaf (as float32) times scales[i]."""
  return jax.tree.map(
      lambda g: g.astype(jnp.float32) * scales.reshape((-1,) + (1,) * (g.ndim - 1)), grads)


def track(tracking: Any, targets: Any, step_sizes: jnp.ndarray) -> Any:
  """y_i - step_sizes[i] (y_i - h_i) for every task i (step size 0 keeps y_i): a per-task
  moving average of gradient-shaped buffers (MoCo, DB-MTL)."""
  return jax.tree.map(lambda y, h: y - scale_rows(step_sizes, y - h), tracking, targets)
