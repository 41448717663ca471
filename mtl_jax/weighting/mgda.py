"""MGDA: the minimum-norm point of the convex hull of the task gradients.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018,
https://arxiv.org/abs/1810.04650, Eq. 3 and Algorithm 2; official code
github.com/isl-org/MultiObjectiveOptimization (`multi_task/min_norm_solvers.py`,
`train_multi_task.py`), also LibMTL's `weighting/MGDA.py`.

The weights alpha solve

    min_alpha || sum_t alpha_t g_t / n_t ||^2   s.t. alpha_t >= 0, sum_t alpha_t = 1,

from the Gram matrix alone: with n = (n_1, ..., n_T) the gradient normalisers of the official
code (`gradient_normalizers`; "optional and not included in the paper"), the solver sees
G_st / (n_s n_t), where

    none   n_t = 1
    l2     n_t = ||g_t||       = sqrt(G_tt)
    loss   n_t = L_t
    loss+  n_t = L_t ||g_t||

The solver is `solvers.min_norm_weights` (Frank-Wolfe of Algorithm 2 with exact line search and
away steps, stopping when the duality gap is below `tol` ||d||^2, when a step leaves alpha
unchanged in float32, or after `iterations`; the official MinNormSolver stops when alpha moves
less than 1e-5 in l1, or after 250 steps). The stop is relative to the solution's own norm, so d
is accurate however small it is against the largest gradient (gradient norms spanning four
orders of magnitude, or loss normalisation with losses of different scales). As in the official
code the weights alpha then scale the task losses, so the update is sum_t alpha_t g_t of the raw
(unnormalised) gradients; LibMTL's params mode instead combines the normalised gradients (w_t =
alpha_t/n_t). With `normalization="none"` (the default, as in the paper and LibMTL; the official
sample config uses "loss+") both are the minimum-norm point itself. Head gradients are not
weighted (the train step gives each head its own gradient).

Representation mode (`allows_rep`): the paper's MGDA-UB (Sec. 3.3) solves the same problem on
the gradients of the shared representation Z, an upper bound that costs one backward pass.

Missing labels: tasks without labels (count 0; zero rows of G) are left out of the hull and get
weight 0. Degenerate inputs: n_t is clamped to >= `eps`, so a zero gradient (or a zero loss)
stays a zero row instead of 0/0; a zero gradient of a labelled task is then the minimum-norm
point (d = 0, MGDA's Pareto-stationary answer), and exactly opposite gradients give d = 0.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting import solvers
from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


class MgdaState(NamedTuple):
  weights: jnp.ndarray  # f32[T], the last step's alpha (for inspection; not read back)


def gradient_normalizers(gram: jnp.ndarray, losses: jnp.ndarray, normalization: str,
                         eps: float) -> jnp.ndarray:
  """f32[T] n_t of the official code's `gradient_normalizers`, clamped to >= eps."""
  norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
  n = {"none": jnp.ones_like(losses), "l2": norms, "loss": losses,
       "loss+": losses * norms}[normalization]
  return jnp.maximum(n, eps)


def make(normalization: str = "none", iterations: int = solvers.MIN_NORM_ITERATIONS,
         tol: float = solvers.MIN_NORM_TOL, away_steps: bool = True,
         eps: float = 1e-8) -> Weighting:
  """MGDA's task weights (see the module docstring).

  Args:
    normalization: "none" | "l2" | "loss" | "loss+", the official code's gradient
      normalisation applied before the min-norm solve.
    iterations: the most Frank-Wolfe steps (official MAX_ITER 250).
    tol: the solver's duality-gap tolerance, relative to ||d||^2.
    away_steps: Frank-Wolfe with away steps (False: plain Frank-Wolfe as Algorithm 2).
    eps: lower clamp of the normalisers.
  """
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"mgda normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
  if iterations < 1 or not tol >= 0 or not eps > 0:
    raise ValueError(f"mgda needs iterations >= 1, tol >= 0, eps > 0; got {iterations}, {tol}, "
                     f"{eps}")

  def init(tasks) -> MgdaState:
    return MgdaState(jnp.zeros((len(task_kinds(tasks)),), jnp.float32))

  def update(state: MgdaState, inputs: WeightingInputs):
    del state
    n = gradient_normalizers(inputs.gram, inputs.losses, normalization, eps)
    alpha = solvers.min_norm_weights(inputs.gram / jnp.outer(n, n), labelled(inputs.counts),
                                     iterations, tol, away_steps)
    return alpha, MgdaState(alpha)

  return Weighting(init, update, needs="gram", allows_rep=True)
