"""STCH: smooth Tchebycheff scalarisation of the task losses.

Lin, Zhang, Yang, Liu, Wang and Zhang, "Smooth Tchebycheff Scalarization for Multi-Objective
Optimization", ICML 2024, https://arxiv.org/abs/2402.19078: the smooth Tchebycheff
scalarisation g_mu(L) = mu log sum_i exp(lambda_i (L_i - z_i) / mu), lambda a preference and z
the ideal point. Its multi-task code (github.com/Xi-L/STCH, `STCH_MTL/LibMTL/weighting/STCH.py`;
also LibMTL's `STCH.py`; defaults mu = 1 and STCH_warmup_epoch = 4 in its `config.py`) uses no
preference (lambda_i = 1), the ideal point z = 0, normalises each loss by a nadir estimate n_i
in log space, and multiplies by T:

    warm-up:  f(L) = sum_i log L_i
    then:     f(L) = T mu log sum_i exp(a_i / mu),   a_i = log(L_i / n_i)

The warm-up is `warmup_epochs` epochs of plain warm-up, then one more epoch whose batch losses
are averaged into the nadir n_i; STCH starts after it. The weights are w_i = df/dL_i:

    warm-up:  w_i = 1 / L_i                       (equal weights on the log losses)
    then:     w_i = T softmax(a / mu)_i / L_i

The default, `log_losses=False`, is the paper's scalarisation on the raw normalised losses,
a_i = L_i / n_i: the warm-up weights are 1 (equal weighting) and then
w_i = T softmax(a / mu)_i / n_i. `log_losses=True` is the official code's log space.

Caveat of the log space: w_i ~ 1 / L_i grows without bound as a training loss approaches 0.
On a training set the model fits exactly (digits: losses ~1e-6 after a few hundred steps) the
float32 noise of a vanishing gradient is multiplied by ~1e6 and training diverges (measured:
test accuracy 0.67 digit / 0.47 parity), which is why it is not the default; the default's
weights are bounded (T / n_i at most).

The official code adds 1e-20 inside the logs; we add `epsilon` the same way (L_i + epsilon
and L_i / n_i + epsilon). Missing labels (not in the official code): a task without labels in
the batch is left out of the sum and of T and gets weight 0; the nadir is each task's mean over
the window's batches that had its labels (1 if none had).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds


class StchState(NamedTuple):
  mu: jnp.ndarray            # f32[], the smoothing parameter
  warmup_steps: jnp.ndarray  # i32[], steps before the nadir window
  nadir_steps: jnp.ndarray   # i32[], steps whose losses are averaged into the nadir
  nadir: jnp.ndarray         # f32[T], running mean of each task's labelled losses in the window
  nadir_count: jnp.ndarray   # i32[T], labelled batches in that mean so far


def warmup_weights(losses: jnp.ndarray, mask: jnp.ndarray, log_losses: bool,
                   epsilon: float) -> jnp.ndarray:
  """f32[T] d/dL_i of sum_i log(L_i + epsilon) (or of sum_i L_i) over the masked tasks."""
  weights = 1.0 / (losses + epsilon) if log_losses else jnp.ones_like(losses)
  return jnp.where(mask, weights, 0.0)


def stch_weights(losses: jnp.ndarray, mask: jnp.ndarray, nadir: jnp.ndarray, mu: jnp.ndarray,
                 log_losses: bool, epsilon: float) -> jnp.ndarray:
  """f32[T] d/dL_i of T mu log sum_i exp(a_i / mu) over the masked tasks (0 elsewhere)."""
  ratio = losses / nadir
  normalised = jnp.log(ratio + epsilon) if log_losses else ratio
  softmax = jax.nn.softmax(normalised / mu, where=mask)
  slope = 1.0 / (losses + epsilon * nadir) if log_losses else 1.0 / nadir
  return jnp.where(mask, mask.sum() * softmax * slope, 0.0)


def updated_nadir(state: StchState, losses: jnp.ndarray, mask: jnp.ndarray,
                  step: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(nadir, count) with this step's labelled losses averaged in if it is in the window."""
  in_window = (step >= state.warmup_steps) & (step < state.warmup_steps + state.nadir_steps)
  add = mask & in_window
  count = state.nadir_count + add.astype(jnp.int32)
  nadir = jnp.where(add, state.nadir + (losses - state.nadir) / jnp.maximum(count, 1),
                    state.nadir)
  return nadir, count


def make(mu: float = 1.0, warmup_epochs: int = 4, steps_per_epoch: int | None = None,
         warmup_steps: int | None = None, nadir_steps: int | None = None,
         log_losses: bool = False, epsilon: float = 1e-20) -> Weighting:
  """STCH's task weights (see the module docstring).

  Args:
    mu: smoothing parameter (official default 1.0); mu -> 0 approaches Tchebycheff (max).
    warmup_epochs: plain warm-up epochs before the nadir epoch (official default 4).
    steps_per_epoch: run fact that turns epochs into steps, filled in by `weighting.get`.
    warmup_steps: plain warm-up steps; default warmup_epochs * steps_per_epoch.
    nadir_steps: steps averaged into the nadir; default steps_per_epoch.
    log_losses: the official code's log transform; False scalarises the raw L_i / n_i.
    epsilon: added inside the logs (official: 1e-20; float32 represents it).
  """
  if warmup_steps is None or nadir_steps is None:
    if steps_per_epoch is None:
      raise ValueError("stch needs steps_per_epoch (filled in by a run), or both "
                       "warmup_steps and nadir_steps")
    warmup_steps = warmup_epochs * steps_per_epoch if warmup_steps is None else warmup_steps
    nadir_steps = steps_per_epoch if nadir_steps is None else nadir_steps
  if not mu > 0 or warmup_steps < 0 or nadir_steps < 1 or epsilon < 0:
    raise ValueError(f"stch needs mu > 0, warmup_steps >= 0, nadir_steps >= 1, epsilon >= 0; "
                     f"got {mu}, {warmup_steps}, {nadir_steps}, {epsilon}")

  def init(tasks) -> StchState:
    num_tasks = len(task_kinds(tasks))
    return StchState(jnp.asarray(mu, jnp.float32), jnp.asarray(warmup_steps, jnp.int32),
                     jnp.asarray(nadir_steps, jnp.int32), jnp.ones((num_tasks,), jnp.float32),
                     jnp.zeros((num_tasks,), jnp.int32))

  def update(state: StchState, inputs: WeightingInputs):
    mask = labelled(inputs.counts)
    nadir, count = updated_nadir(state, inputs.losses, mask, inputs.step)
    warming_up = inputs.step < state.warmup_steps + state.nadir_steps
    weights = jnp.where(
        warming_up, warmup_weights(inputs.losses, mask, log_losses, epsilon),
        stch_weights(inputs.losses, mask, nadir, state.mu, log_losses, epsilon))
    return weights, state._replace(nadir=nadir, nadir_count=count)

  return Weighting(init, update)
