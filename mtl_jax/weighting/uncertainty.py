"""Uncertainty weighting: one learnable log-variance per task.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
Geometry and Semantics", CVPR 2018, https://arxiv.org/abs/1705.07115 (Eq. 7 for regression,
Eq. 10 for classification). No official code was released; LibMTL's `weighting/UW.py` uses the
regression form for every task and starts at s = -0.5.

With s_i = log sigma_i^2 (the paper regresses the log-variance for stability, Sec. 3.2), the
jointly minimised objective is sum_i f(L_i, s_i), with per task:

    form="paper"   classification  f = exp(-s) L + s / 2        (Eq. 10: L / sigma^2 + log sigma)
                   regression      f = exp(-s) L / 2 + s / 2    (Eq. 7: L / 2sigma^2 + log sigma)
    form="simple"  every task      f = exp(-s) L + s

The weight of task i, the factor of grad L_i in the model's gradient, is df/dL_i: exp(-s)
(classification, or any task in the simple form) or exp(-s) / 2 (regression). Setting df/ds = 0
gives where each s settles for a loss L that changes slowly:

    paper, classification  exp(-s) L = 1/2  ->  s* = log 2L,  weight exp(-s*)     = 1 / (2L)
    paper, regression      exp(-s) L = 1    ->  s* = log L,   weight exp(-s*) / 2 = 1 / (2L)
    simple                 exp(-s) L = 1    ->  s* = log L,   weight exp(-s*)     = 1 / L

So at the optimum every task's weighted loss w_i L_i is the same constant (1/2 in the paper's
form, 1 in the simple one): the model descends sum_i grad log L_i (halved in the paper's form),
whatever the tasks' loss scales. The forms differ in that constant and in where s settles, not
in the balance between tasks.

Kinds: the regression form (a Gaussian likelihood) serves the kinds with an error KPI
(`base.ERROR_KINDS`: "regression"); the classification form (a likelihood over classes) every
other kind, "binary" included (`base.error_kpis`).

The s_i are trained by the run's optimizer (`optimizer`, as in the paper where they are
ordinary network parameters): the state holds s and `optimizer.init(s)`, and each update takes
one `optimizer.update` step on d objective / ds. Standalone, without a run optimizer, s uses
`optax.adam(1e-3)`. The run optimizer's weight decay and gradient clipping apply to s as well
(clipping by s's own norm, since s is updated separately from the model).

Timing: the weights returned are those of s before this step's update, so the model and s take
one joint gradient step on the objective at the same point (as a single backward pass does).

A task with no labels in the batch (count 0, loss 0) would see df/ds = 1/2 and drift: its
gradient is masked to 0, and its s and its slice of the optimizer state (every state leaf
shaped like s, e.g. Adam's moments) keep their old values, so neither momentum nor a zero
gradient moves it; its weight at that step is 0. Scalar optimizer state (Adam's step count)
advances with every update.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax.weighting.base import (Weighting, WeightingInputs, error_kpis, keep_unlabelled,
                                    labelled, task_kinds, weight_optimizer)

FORMS = ("paper", "simple")


class UncertaintyState(NamedTuple):
  log_variance: jnp.ndarray         # f32[T], s_i = log sigma_i^2
  opt_state: Any                    # the optimizer's state for s
  loss_factor: jnp.ndarray          # f32[T], a_i in a_i exp(-s_i) L_i + b_i s_i (constant)
  log_variance_factor: jnp.ndarray  # f32[T], b_i (constant)


def objective_factors(kinds: tuple[str, ...], form: str) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(a f32[T], b f32[T]) with each task's objective a exp(-s) L + b s.

  paper: error kinds (regression) (1/2, 1/2), every other kind (classification, binary)
  (1, 1/2); simple: (1, 1) for every task.
  """
  if form == "simple":
    ones = jnp.ones((len(kinds),), jnp.float32)
    return ones, ones
  loss_factor = jnp.where(jnp.asarray(error_kpis(kinds)), 0.5, 1.0).astype(jnp.float32)
  return loss_factor, jnp.full((len(kinds),), 0.5, jnp.float32)


def objective(log_variance: jnp.ndarray, losses: jnp.ndarray, loss_factor: jnp.ndarray,
              log_variance_factor: jnp.ndarray) -> jnp.ndarray:
  """f32[]: sum_i a_i exp(-s_i) L_i + b_i s_i."""
  return jnp.sum(loss_factor * jnp.exp(-log_variance) * losses
                 + log_variance_factor * log_variance)


def make(form: str = "paper", init_log_variance: float = 0.0,
         optimizer: optax.GradientTransformation | None = None) -> Weighting:
  """Uncertainty weighting (see the module docstring).

  Args:
    form: "paper" (per task kind, Eqs. 7 and 10) or "simple" (exp(-s) L + s for every task).
    init_log_variance: the initial s of every task; 0 gives weights 1 (classification) and 1/2
      (regression, paper form) at the first step.
    optimizer: trains s; the run's optimizer when built by `weighting.get` in a run, else
      `optax.adam(1e-3)`.
  """
  if form not in FORMS:
    raise ValueError(f"form must be one of {FORMS}, got {form!r}")
  tx = weight_optimizer(optimizer)
  init_log_variance = float(init_log_variance)

  def init(tasks) -> UncertaintyState:
    kinds = task_kinds(tasks)
    s = jnp.full((len(kinds),), init_log_variance, jnp.float32)
    return UncertaintyState(s, tx.init(s), *objective_factors(kinds, form))

  def update(state: UncertaintyState, inputs: WeightingInputs):
    s, a, b = state.log_variance, state.loss_factor, state.log_variance_factor
    has_labels = labelled(inputs.counts)
    grad = jax.grad(objective)(s, inputs.losses, a, b)
    grad = jnp.where(has_labels, grad, 0.0)
    updates, opt_state = tx.update(grad, state.opt_state, s)
    new_s = keep_unlabelled(optax.apply_updates(s, updates), s, has_labels)
    opt_state = keep_unlabelled(opt_state, state.opt_state, has_labels)
    weights = jnp.where(has_labels, a * jnp.exp(-s), 0.0)
    return weights, state._replace(log_variance=new_s, opt_state=opt_state)

  return Weighting(init, update)
