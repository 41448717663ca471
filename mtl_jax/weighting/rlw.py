"""Random Loss Weighting: fresh random task weights at every step.

Lin, Ye, Zhang & Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022, https://arxiv.org/abs/2111.10603 (the RLW update: sample
lambda_tilde from p, lambda = softmax(lambda_tilde), loss sum_i lambda_i L_i; p = N(0, I) is the
default); the authors' code is LibMTL's `weighting/RLW.py`.

    lambda_tilde ~ N(0, I_T),   w = softmax(lambda_tilde)

drawn from `inputs.key`, a function of (seed, step), so a resumed run draws the same weights.
As in the paper and LibMTL, the weights sum to 1 (not to T): the loss is a random convex
combination of the task losses, so with SGD the effective learning rate is 1/T that of the
plain sum; Adam-like optimizers are nearly invariant to that scale. Tasks without labels in a
batch get weight 0 (their loss is 0 anyway); the labelled tasks keep their draw, which is not
renormalised over them (the draw of every task, labelled or not, is the same function of the
key).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds


class RLWState(NamedTuple):
  logits: jnp.ndarray  # f32[T], the last step's standard-normal draw (0 before the first)


def make() -> Weighting:
  """Random loss weighting with standard normal logits (the paper's default distribution)."""

  def init(tasks) -> RLWState:
    return RLWState(jnp.zeros((len(task_kinds(tasks)),), jnp.float32))

  def update(state: RLWState, inputs: WeightingInputs):
    logits = jax.random.normal(inputs.key, state.logits.shape, jnp.float32)
    weights = jnp.where(labelled(inputs.counts), jax.nn.softmax(logits), 0.0)
    return weights, RLWState(logits)

  return Weighting(init, update)
