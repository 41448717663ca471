"""Any gradient method on the log losses: `weighting.get(name, log_losses=True)`.

Lin et al., "Dual-Balancing for Multi-Task Learning" (DB-MTL), 2023,
https://arxiv.org/abs/2308.12029: balancing the loss scales by a logarithm, L_i -> log L_i,
helps gradient methods too (log-MGDA, log-CAGrad, log-IMTL, log-Nash-MTL; section and table
numbers not checked here). The gradient of log L_i is g_i / L_i, so the method runs on

    g'_i = g_i / (L_i + eps),    G'_st = G_st / ((L_s + eps) (L_t + eps)),

eps = 1e-8 as in DB-MTL's code (log(L_i + 1e-8), LibMTL's `weighting/DB_MTL.py`), and its
weights w' on the g'_i are weights w_i = w'_i / (L_i + eps) on the raw g_i, the weights the step
applies and logs. A method that returns a `Direction` already gives the update; only its logged
weights are rescaled. The method still reads the raw losses L_i (`inputs.losses`): MGDA's "loss"
normalisation, for one, divides by them and would not be defined on log L_i < 0.

One wrapper for every method that reads per-task gradients (needs "gram" or "grads"), in either
gradient mode; a task without labels keeps its zero row and weight 0. For the loss-only methods
the same transform is the method `si` (sum_i log L_i).
"""

from __future__ import annotations

import jax.numpy as jnp

from mtl_jax.weighting.base import (Direction, Weighting, WeightingInputs, labelled,
                                   log_loss_weights, scale_rows)

EPS = 1e-8  # DB-MTL's log(L_i + 1e-8)


def log_loss_inputs(inputs: WeightingInputs, eps: float = EPS) -> tuple[WeightingInputs,
                                                                         jnp.ndarray]:
  """(inputs whose Gram matrix and gradients are those of log(L_i + eps), the factors
  1 / (L_i + eps) f32[T], 0 for tasks without labels)."""
  scale = log_loss_weights(inputs.losses, labelled(inputs.counts), eps)
  gram = None if inputs.gram is None else inputs.gram * jnp.outer(scale, scale)
  grads = None if inputs.grads is None else scale_rows(scale, inputs.grads)
  return inputs._replace(gram=gram, grads=grads), scale


def on_log_losses(method: Weighting, eps: float = EPS) -> Weighting:
  """`method` run on the gradients of log(L_i + eps), its weights mapped back to the raw g_i."""
  if method.needs == "losses":
    raise ValueError("log_losses=True runs a gradient method on the gradients of log L_i; this "
                     "method reads only the losses (the loss form is the method 'si')")

  def update(state, inputs: WeightingInputs):
    log_inputs, scale = log_loss_inputs(inputs, eps)
    result, state = method.update(state, log_inputs)
    if isinstance(result, Direction):
      return result._replace(weights=result.weights * scale), state
    return result * scale, state

  return method._replace(update=update)
