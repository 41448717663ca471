"""SI: scale-invariant scalarisation, the sum of the log losses.

Minimise sum_i log L_i, whose gradient is sum_i grad L_i / L_i: the weights are

    w_i = 1 / L_i    (constants of the step, evaluated at the batch losses)

so every weighted loss w_i L_i is 1 and multiplying a task's loss by any c > 0 leaves the update
unchanged (hence "scale-invariant"). The baseline "SI" of Navon et al., "Multi-Task Learning as
a Bargaining Game" (Nash-MTL), ICML 2022, https://arxiv.org/abs/2202.01017 (its experiments'
baselines); official code github.com/AvivNavon/nash-mtl, `methods/weight_methods.py`, class
ScaleInvariantLinearScalarization (loss sum_i log L_i). It is also the loss-scale balancing of
DB-MTL (Lin et al., "Dual-Balancing for Multi-Task Learning", https://arxiv.org/abs/2308.12029:
a logarithm transform of each task loss), whose code (LibMTL's `weighting/DB_MTL.py`) takes
log(L_i + 1e-8); the same as GLS (`gls.py`) up to the common factor G / T.

Guard: w_i = 1 / (max(L_i, 0) + eps), eps = 1e-8 by default as in DB-MTL's code (the Nash-MTL
code has no eps), the exact derivative of sum_i log(L_i + eps) for L_i >= 0. A loss at or below
0 (log undefined) gets the largest weight, 1 / eps, finite. Head gradients are weighted too, as
sum_i log L_i prescribes. A task without labels in the batch gets weight 0.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import (Weighting, WeightingInputs, labelled, log_loss_weights,
                                   task_kinds)


class SIState(NamedTuple):
  """SI keeps no state; the field only records the number of tasks."""
  num_tasks: jnp.ndarray  # i32[], T


def make(eps: float = 1e-8) -> Weighting:
  """SI's weights w_i = 1 / (L_i + eps) (see the module docstring).

  Args:
    eps: added to every loss before the inverse (DB-MTL's code: 1e-8).
  """
  if not eps > 0:
    raise ValueError(f"si needs eps > 0, got {eps}")

  def init(tasks) -> SIState:
    return SIState(jnp.asarray(len(task_kinds(tasks)), jnp.int32))

  def update(state: SIState, inputs: WeightingInputs):
    return log_loss_weights(inputs.losses, labelled(inputs.counts), eps), state

  return Weighting(init, update)
