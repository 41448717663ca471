"""UW-SO: soft optimal uncertainty weighting, a softmax of the inverse losses.

Kirchdorfer, Elich, Kutsche, Stuckenschmidt, Schott and Köhler, "Analytical Uncertainty-Based
Loss Weighting in Multi-Task Learning", GCPR 2024, https://arxiv.org/abs/2408.07985. Code by the
first author: github.com/lukaskirchdorfer/MTL4PPM, `src/weighting/UW_SO.py` (with `--T`,
default 1.0, in `main.py`); a repository of the GCPR paper itself was not found.

Uncertainty weighting (`uncertainty.py`) learns sigma_k by gradient descent; setting its
derivative to 0 gives sigma_k analytically (for an L1 loss sigma_k = L_k), so the optimal
weight of task k is 1 / L_k (the paper's UW-O). UW-SO normalises these with a softmax with
temperature T:

    w_k = exp((1 / L_k) / T) / sum_j exp((1 / L_j) / T)

the weights sum to 1 (as in the code: no factor of the number of tasks). A small T puts nearly
all the weight on the task with the smallest loss; a large T tends to the uniform 1 / #tasks.
The paper tunes T per dataset, and the authors' experiment script
(`bash_scripts/run_all_experiments.sh`) sweeps T over 1, 3, 5, 7, 10, 15, 20. Deviation: this
module's default is 20, the top of that sweep, where the code's command-line default is 1.0
(below). Not confirmed here: the paper's equation number and the temperatures of its reported
runs.

Since 1 / L_k grows without bound as a loss nears 0, the weights collapse onto the task with the
smallest loss once the losses are small against 1 / T, and that task's loss then falls further.
On configs/digits.py (batch losses reach 1e-4) T = 1 gives `parity` all the weight from step 100
on (test accuracy of `digit` 0.90); T = 10 gives 0.96 and T = 20 0.97 (`parity` 0.99 in all):
hence the default. Any T collapses once the losses are small enough against 1 / T; tune it.

As in the code, 1 / (L_k + 1e-8) (`eps`) with the losses as constants (detached); a loss below 0
counts as 0. The weights are those of this step's batch losses; no state is kept beyond T.
Head gradients are weighted too. A task without labels in the batch gets weight 0 and the
softmax runs over the labelled tasks only (their weights sum to 1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds


class UWSOState(NamedTuple):
  """UW-SO keeps no state; the field only records the number of tasks."""
  num_tasks: jnp.ndarray  # i32[], T


def masked_softmax(logits: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """f32[T]: the softmax of `logits` over the tasks in `mask`, 0 elsewhere (all 0 if none)."""
  top = jnp.max(jnp.where(mask, logits, -jnp.inf))
  shifted = jnp.where(mask, logits - jnp.where(jnp.isfinite(top), top, 0.0), -jnp.inf)
  exps = jnp.exp(shifted)
  total = exps.sum()
  return jnp.where(total > 0, exps / jnp.where(total > 0, total, 1.0), 0.0)


def uw_so_weights(losses: jnp.ndarray, mask: jnp.ndarray, temperature: float,
                  eps: float) -> jnp.ndarray:
  """f32[T]: softmax((1 / (L + eps)) / temperature) over the labelled tasks `mask`."""
  inverse = 1.0 / (jnp.maximum(losses, 0.0) + eps)
  return masked_softmax(inverse / temperature, mask)


def make(temperature: float = 20.0, eps: float = 1e-8) -> Weighting:
  """UW-SO's weights (see the module docstring).

  Args:
    temperature: T of the softmax, > 0 (the authors' sweep: 1-20; their command-line default
      1.0); larger gives more even weights.
    eps: added to each loss before the inverse (the code's 1e-8).
  """
  if not temperature > 0 or not eps > 0:
    raise ValueError(f"uw_so needs temperature > 0 and eps > 0; got {temperature}, {eps}")
  temperature, eps = float(temperature), float(eps)

  def init(tasks) -> UWSOState:
    return UWSOState(jnp.asarray(len(task_kinds(tasks)), jnp.int32))

  def update(state: UWSOState, inputs: WeightingInputs):
    return uw_so_weights(inputs.losses, labelled(inputs.counts), temperature, eps), state

  return Weighting(init, update)
