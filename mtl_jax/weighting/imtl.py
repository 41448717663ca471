"""IMTL: impartial multi-task learning (IMTL-G, IMTL-L and their hybrid).

Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, "Towards Impartial Multi-task Learning",
ICLR 2021, https://openreview.net/forum?id=IMPnRXEWpvr, Sec. 3.1 (IMTL-L), Sec. 3.2 and Eq. 6
(IMTL-G's closed form), Algorithm 1 (hybrid); no official code; LibMTL's `weighting/IMTL.py`.

IMTL-G: with u_t = g_t / ||g_t||, find d = sum_t alpha_t g_t, sum_t alpha_t = 1, whose
projections on every u_t are equal: d . (u_1 - u_t) = 0 for t = 2..T. The paper's closed form
is alpha_{2:T} = g_1 U^T (D U^T)^{-1}, D = [g_1 - g_t]_t, U = [u_1 - u_t]_t, alpha_1 =
1 - sum alpha_{2:T}. Every entry is an inner product, so it runs on the Gram matrix: with
n_t = sqrt(G_tt), g_s . u_t = G_st / n_t. We solve the same T x T linear system (the sum
constraint and the T - 1 equal-projection rows) with a pseudo-inverse (relative cut-off
`rcond`), which is the closed form where D U^T is invertible and the minimum-norm alpha where
it is not (parallel gradients, where every alpha satisfies the projections).

IMTL-L: learnable scales s_t, each task's loss becomes e^{s_t} L_t - s_t (so each scaled loss
settles at e^{s_t} L_t = 1); s is trained by the run's optimizer (`optimizer`, as in
`uncertainty`), starting at 0; standalone, by `optax.adam(1e-3)`. The weights are those of s
before this step's update, as a single backward pass gives them.

Modes: "gradient" (IMTL-G on the raw gradients), "loss" (IMTL-L only: weights e^{s_t}, a loss
weighting, needs="losses", applied to the heads too as in the paper), and "hybrid" (the
paper's IMTL, the default): IMTL-G on the gradients of the scaled losses, e^{s_t} g_t, i.e. on
the Gram matrix e^{s_s + s_t} G_st, so the effective weight of g_t is alpha_t e^{s_t}.
Deviation (hybrid): the train step gives each head its own unweighted gradient, where the paper
trains the heads on the scaled loss e^{s_t} L_t - s_t.

Representation mode (`allows_rep`, gradient and hybrid): the paper computes the gradients with
respect to the shared feature z (Sec. 3.2), as this mode does.

Missing labels and degenerate inputs: tasks without labels, and tasks whose gradient norm is
below `eps` times the largest, are left out of IMTL-G (weight 0, their alpha fixed to 0); a task
without labels keeps its s and its slice of the optimizer state. Exactly opposite gradients give
alpha = (1/2, 1/2), d = 0 (equal projections 0). With no usable task the weights are 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from mtl_jax.weighting.base import (Weighting, WeightingInputs, keep_unlabelled, labelled,
                                    task_kinds, weight_optimizer)

MODES = ("hybrid", "gradient", "loss")


class ImtlState(NamedTuple):
  log_scales: jnp.ndarray  # f32[T], s_t (IMTL-L; stays 0 in the "gradient" mode)
  opt_state: Any           # the optimizer's state for s


def imtl_g_weights(gram: jnp.ndarray, mask: jnp.ndarray, eps: float = 1e-6,
                   rcond: float = 1e-5) -> jnp.ndarray:
  """f32[T] alpha: sum alpha = 1 over the usable tasks, d = alpha^T J with equal d . u_t.

  Args:
    gram: f32[T, T], G = J J^T.
    mask: bool[T], the labelled tasks.
    eps: tasks with ||g_t|| <= eps max_s ||g_s|| are left out (weight 0).
    rcond: relative singular-value cut-off of the pseudo-inverse.
  """
  num_tasks = gram.shape[0]
  diag = jnp.maximum(jnp.diag(gram), 0.0)
  scale = jnp.max(jnp.where(mask, diag, 0.0))
  gram = gram / jnp.where(scale > 0, scale, 1.0)        # alpha does not depend on the scale
  norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
  active = mask & (norms > eps)
  projections = gram / jnp.where(active, norms, 1.0)[None, :]  # [k, t] = g_k . u_t
  ref = jnp.argmax(active)                                      # the first usable task
  equal_rows = (projections - projections[:, ref][:, None]).T      # [t, k]: (u_t - u_ref) . g_k
  active_f = active.astype(gram.dtype)
  rows = jnp.where((active & (jnp.arange(num_tasks) != ref))[:, None],
                   equal_rows * active_f[None, :], jnp.eye(num_tasks, dtype=gram.dtype))
  rows = rows.at[ref].set(active_f)
  rhs = jnp.zeros((num_tasks,), gram.dtype).at[ref].set(1.0)
  alpha = jnp.linalg.pinv(rows, rtol=rcond) @ rhs
  return jnp.where(active, alpha, 0.0)


def make(mode: str = "hybrid", optimizer: optax.GradientTransformation | None = None,
         eps: float = 1e-6, rcond: float = 1e-5) -> Weighting:
  """IMTL's task weights (see the module docstring).

  Args:
    mode: "hybrid" (IMTL, the paper's default), "gradient" (IMTL-G) or "loss" (IMTL-L).
    optimizer: trains the loss scales s; the run's optimizer in a run, else adam(1e-3).
    eps: relative gradient norm below which a task is left out of IMTL-G.
    rcond: relative cut-off of IMTL-G's pseudo-inverse.
  """
  if mode not in MODES:
    raise ValueError(f"imtl mode must be one of {MODES}, got {mode!r}")
  if not eps >= 0 or not rcond > 0:
    raise ValueError(f"imtl needs eps >= 0 and rcond > 0; got {eps}, {rcond}")
  tx = weight_optimizer(optimizer)

  def init(tasks) -> ImtlState:
    s = jnp.zeros((len(task_kinds(tasks)),), jnp.float32)
    return ImtlState(s, tx.init(s))

  def train_scales(state: ImtlState, losses: jnp.ndarray, has_labels: jnp.ndarray):
    """One optimizer step on d/ds sum_t (e^{s_t} L_t - s_t) = e^s L - 1 (labelled tasks)."""
    s = state.log_scales
    grad = jnp.where(has_labels, jnp.exp(s) * losses - 1.0, 0.0)
    updates, opt_state = tx.update(grad, state.opt_state, s)
    new_s = keep_unlabelled(optax.apply_updates(s, updates), s, has_labels)
    return ImtlState(new_s, keep_unlabelled(opt_state, state.opt_state, has_labels))

  def update(state: ImtlState, inputs: WeightingInputs):
    has_labels = labelled(inputs.counts)
    if mode == "gradient":
      return imtl_g_weights(inputs.gram, has_labels, eps, rcond), state
    loss_scales = jnp.where(has_labels, jnp.exp(state.log_scales), 0.0)
    new_state = train_scales(state, inputs.losses, has_labels)
    if mode == "loss":
      return loss_scales, new_state
    scaled_gram = inputs.gram * jnp.outer(loss_scales, loss_scales)
    return imtl_g_weights(scaled_gram, has_labels, eps, rcond) * loss_scales, new_state

  needs = "losses" if mode == "loss" else "gram"
  return Weighting(init, update, needs=needs, allows_rep=True)
