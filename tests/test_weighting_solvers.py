"""The shared JAX solvers of the gradient methods (mtl_jax/weighting/solvers.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from mtl_jax.weighting import solvers


def _brute_force_projection(v):
  """argmin ||w - v|| over the simplex, by SLSQP (float64)."""
  v = np.asarray(v, np.float64)
  result = optimize.minimize(lambda w: ((w - v) ** 2).sum(), np.full(len(v), 1 / len(v)),
                             bounds=[(0, 1)] * len(v),
                             constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                             method="SLSQP", options={"ftol": 1e-15})
  return result.x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_project_simplex_is_the_nearest_point_of_the_simplex(seed):
  v = np.random.default_rng(seed).normal(size=6) * 2
  w = np.asarray(solvers.project_simplex(jnp.asarray(v, jnp.float32)))
  np.testing.assert_allclose(w, _brute_force_projection(v), atol=1e-5)


def test_project_simplex_worked_examples_and_points_already_on_it():
  np.testing.assert_allclose(solvers.project_simplex(jnp.array([0.5, 2.0, -1.0, 0.3])),
                             [0.0, 1.0, 0.0, 0.0])
  np.testing.assert_allclose(solvers.project_simplex(jnp.array([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5],
                             atol=1e-7)
  np.testing.assert_allclose(solvers.project_simplex(jnp.zeros(4)), np.full(4, 0.25))


def test_project_simplex_over_a_mask_leaves_the_other_entries_at_zero():
  v = jnp.array([0.5, 2.0, -1.0, 0.3])
  mask = jnp.array([True, False, True, True])
  w = np.asarray(solvers.project_simplex(v, mask))
  np.testing.assert_allclose(w, [0.6, 0.0, 0.0, 0.4], atol=1e-6)
  np.testing.assert_array_equal(solvers.project_simplex(v, jnp.zeros(4, bool)), np.zeros(4))


def test_min_norm_solve_reports_a_duality_gap_relative_to_the_solutions_norm():
  jacobian = np.random.default_rng(3).normal(size=(5, 3))
  result = solvers.min_norm_solve(jnp.asarray(jacobian @ jacobian.T, jnp.float32))
  w = np.asarray(result.weights, np.float64)
  d = w @ jacobian
  assert float(result.gap) == pytest.approx(d @ d - (jacobian @ d).min(), abs=1e-5)
  # The stop: gap <= tol ||d||^2, hence ||d - d*|| <= sqrt(tol) ||d|| (the gap bounds it).
  assert float(result.gap) <= solvers.MIN_NORM_TOL * (d @ d)
  assert 0 < int(result.iterations) < solvers.MIN_NORM_ITERATIONS


def test_min_norm_solve_stops_once_a_step_leaves_the_weights_unchanged():
  # Norms 0.045, 4.5 and 464: rounding in G alpha keeps the gap above 1e-9 ||d||^2, so that
  # tolerance alone would run to the cap; the solver ends when float32 stops moving alpha.
  cosines = np.array([[1.0, -0.5, -0.9], [-0.5, 1.0, 0.3], [-0.9, 0.3, 1.0]])
  gram = jnp.asarray(cosines * np.outer([0.045, 4.5, 464.0], [0.045, 4.5, 464.0]), jnp.float32)
  result = solvers.min_norm_solve(gram, tol=1e-9)
  w = np.asarray(result.weights)
  assert int(result.iterations) < solvers.MIN_NORM_ITERATIONS
  assert float(result.gap) > 1e-9 * float(w @ np.asarray(gram) @ w)
  np.testing.assert_array_equal(solvers.min_norm_solve(gram, tol=1e-9,
                                                       iterations=1000).weights, w)


def test_min_norm_weights_respects_the_iteration_cap_and_jits():
  jacobian = np.random.default_rng(4).normal(size=(6, 4))
  gram = jnp.asarray(jacobian @ jacobian.T, jnp.float32)
  capped = jax.jit(solvers.min_norm_solve, static_argnames=("iterations", "tol", "away_steps"))(
      gram, iterations=2, tol=0.0, away_steps=False)
  assert int(capped.iterations) == 2
  np.testing.assert_allclose(np.asarray(capped.weights).sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(solvers.min_norm_weights)(gram),
                             solvers.min_norm_weights(gram), atol=1e-6)
