"""MoDo: multi-objective gradient with double sampling.

Chen, Fernando, Ying and Chen, "Three-Way Trade-Off in Multi-Objective Learning: Optimization,
Generalization and Conflict-Avoidance", NeurIPS 2023, https://arxiv.org/abs/2305.20057,
Algorithm 1 (MoDo); official code github.com/heshandevaka/Trade-Off-MOL, also LibMTL's
`weighting/MoDo.py`.

Weights lambda on the simplex (1/T at the start) take one projected gradient step per update
on (1/2) ||J lambda||^2 + (rho/2) ||lambda||^2, then the model steps along J^T lambda:

    lambda   <- Pi_simplex(lambda - gamma (J_1 J_2^T lambda + rho lambda))
    direction = J_3^T lambda

Deviation: the paper samples three independent batches per step (J_1, J_2 for an unbiased
estimate of J J^T, J_3 for the update). We have one batch, so J_1 = J_2 = J_3 = J and the
update reads only the Gram matrix G = J J^T: lambda <- Pi(lambda - gamma (G + rho I) lambda),
weights lambda. G of one batch over-estimates the full-data Gram matrix by the gradient noise's
covariance; the double sampling is what removes that bias. No extra forward passes, and allowed
in the representation mode (G of the representation gradients, as MGDA-UB; LibMTL refuses it
because of the three batches).

Missing labels: a task without labels keeps its lambda_i and gets weight 0; the others move on
the face of the simplex that keeps it fixed (`solvers.simplex_face_point`), and the step's
weights are that face's point, summing to 1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds
from mtl_jax.weighting.solvers import project_simplex, simplex_face_point


class MoDoState(NamedTuple):
  lambdas: jnp.ndarray  # f32[T], on the simplex


def modo_step(lambdas: jnp.ndarray, gram: jnp.ndarray, mask: jnp.ndarray, gamma: float,
              rho: float) -> jnp.ndarray:
  """f32[T]: Pi_simplex(lambda - gamma (G + rho I) lambda) over the tasks in `mask`."""
  return project_simplex(lambdas - gamma * (gram @ lambdas + rho * lambdas), mask)


def make(gamma: float = 1e-3, rho: float = 0.1) -> Weighting:
  """MoDo's weights (see the module docstring). Defaults: LibMTL's.

  Args:
    gamma: lambda's step size (LibMTL 1e-3; the official repository's config 0.1).
    rho: the l2 regularisation of lambda's update.
  """
  if not gamma > 0 or rho < 0:
    raise ValueError(f"modo needs gamma > 0 and rho >= 0; got gamma={gamma}, rho={rho}")

  def init(tasks) -> MoDoState:
    num_tasks = len(task_kinds(tasks))
    return MoDoState(jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32))

  def update(state: MoDoState, inputs: WeightingInputs):
    has_labels = labelled(inputs.counts)
    mu, mass = simplex_face_point(state.lambdas, has_labels)
    mu = modo_step(mu, inputs.gram, has_labels, gamma, rho)
    return mu, MoDoState(jnp.where(has_labels, mass * mu, state.lambdas))

  return Weighting(init, update, needs="gram", allows_rep=True)
