"""NTKMTL: balance the tasks' convergence speeds by their neural tangent kernels.

Qin, Wang, Liao and Yan, "NTKMTL: Mitigating Task Imbalance in Multi-Task Learning from Neural
Tangent Kernel Perspective", NeurIPS 2025, https://arxiv.org/abs/2510.18258; official code
github.com/jianke0604/NTKMTL (`methods/weight_methods.py`, class NTKMTL, its `ntkgrad`;
`ntk_exp` and `max_norm` in `experiments/utils.py`).

Under gradient flow a task converges at a rate set by the spectrum of its NTK; NTKMTL weights
each task by the ratio of the summed largest NTK eigenvalues lambda_j to its own, raised to
gamma (the paper's square root, the code's `ntk_exp` = 0.5, which its README suggests raising to
about 0.75 on some benchmarks). In the form the code runs (the paper's n = 1: one gradient per
task, "fair to other gradient-oriented methods"), task i's NTK is the scalar ||g_i||^2 = G_ii,
so from the Gram matrix alone (needs="gram"):

    w_i = T (tr(G) / G_ii)^gamma,    d = sum_i w_i g_i,

T the number of tasks (the code's `overwrite_grad` multiplies by n_tasks "to match the sum
loss"), and, as the code does with torch's clip_grad_norm_ (max_norm = 1.0 in every run), the
shared update is clipped: w <- w min(1, max_norm / (||d|| + 1e-6)), ||d||^2 = w^T G w. These
clipped w are the reported weights. With gamma = 1/2 every weighted gradient w_i g_i has the
same norm T sqrt(tr G) before the clip: the tasks' updates are balanced in magnitude, and a
task whose gradient is small is pulled up most. The weights depend on G only through the ratios
G_ii / tr G (besides the clip), so they do not change when G is scaled.

Deviations: a labelled task whose gradient is zero (G_ii <= 1e-20 max_j G_jj), where the ratio
is infinite, gets weight 0 (`base.ntk_ratios`); T counts the tasks in the combination
(labelled, nonzero gradient), as FairGrad's factor does here. The head parameters get their
own task's gradient, unweighted, as in the code (each loss's backward reaches its head once).
The shared-representation form, NTKMTL-SR, is `ntkmtl_sr.py`.

Missing labels: tasks without labels (zero rows of G) get weight 0 and are left out of tr(G)
(their G_ii is 0 anyway). Gradients of the shared parameters only (`allows_rep=False`: the code
runs NTKMTL on the shared parameters; its representation form is NTKMTL-SR, another estimate).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import (Weighting, WeightingInputs, clip_factor, labelled, ntk_ratios,
                                   task_kinds)


class NtkmtlState(NamedTuple):
  """NTKMTL needs no state; it keeps the last step's weights for inspection."""
  weights: jnp.ndarray  # f32[T], the last step's clipped weights (0 before the first step)


def ntkmtl_weights(gram: jnp.ndarray, mask: jnp.ndarray, gamma: float = 0.5,
                   max_norm: float = 1.0) -> jnp.ndarray:
  """f32[T]: T (tr(G) / G_ii)^gamma, the update clipped to `max_norm` (0: no clip)."""
  ratios = ntk_ratios(jnp.diag(gram), mask, gamma)
  weights = jnp.count_nonzero(ratios) * ratios
  trace = jnp.sum(jnp.where(mask, jnp.maximum(jnp.diag(gram), 0.0), 0.0))
  normalized = gram / jnp.where(trace > 0, trace, 1.0)  # ||d||^2 = tr(G) w^T G_n w, no overflow
  squared_norm = trace * jnp.maximum(weights @ normalized @ weights, 0.0)
  return weights * clip_factor(squared_norm, max_norm)


def make(gamma: float = 0.5, max_norm: float = 1.0) -> Weighting:
  """NTKMTL's weights (see the module docstring). Defaults: the official code's.

  Args:
    gamma: the exponent of the NTK ratio, > 0 (`ntk_exp`, 0.5: the paper's square root).
    max_norm: clip the shared update to this norm; 0 disables (official default 1.0).
  """
  if not gamma > 0 or not max_norm >= 0:
    raise ValueError(f"ntkmtl needs gamma > 0 and max_norm >= 0; got {gamma}, {max_norm}")
  gamma, max_norm = float(gamma), float(max_norm)

  def init(tasks) -> NtkmtlState:
    return NtkmtlState(jnp.zeros((len(task_kinds(tasks)),), jnp.float32))

  def update(state: NtkmtlState, inputs: WeightingInputs):
    del state
    weights = ntkmtl_weights(inputs.gram, labelled(inputs.counts), gamma, max_norm)
    return weights, NtkmtlState(weights)

  return Weighting(init, update, needs="gram")
