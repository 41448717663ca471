"""UPGrad (Quinton & Rey 2024): the mean of each gradient's projection onto the dual cone."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import solvers

REG_EPS = 1e-4




@functools.lru_cache(maxsize=None)
def _method(**kwargs):
  """The method and its jitted update, built once per hyper-parameters (compiles are slow)."""
  method = weighting.get("upgrad", **kwargs)
  return method, jax.jit(method.update)


def _weights(jacobian, counts=None, **kwargs):
  jacobian = np.asarray(jacobian, np.float32)
  method, update = _method(**kwargs)
  inputs = weighting.make_inputs(np.ones(len(jacobian)), counts, grads=jnp.asarray(jacobian))
  weights, _ = update(method.init(len(jacobian)), inputs)
  return np.asarray(weights, np.float64)


def _brute_force_qp(quad, lower):
  """argmin_{v >= lower} v^T Q v by trying every set of free coordinates (float64 KKT check)."""
  num_tasks = len(lower)
  for size in range(num_tasks + 1):
    for free in itertools.combinations(range(num_tasks), size):
      free = list(free)
      fixed = [i for i in range(num_tasks) if i not in free]
      v = np.array(lower, np.float64)
      if free:
        v[free] = np.linalg.solve(quad[np.ix_(free, free)], -quad[np.ix_(free, fixed)] @ v[fixed])
      multipliers = quad @ v
      if (v >= lower - 1e-12).all() and (multipliers[fixed] >= -1e-12).all():
        return v
  raise AssertionError("no KKT point")


def _reference_weights(jacobian, reg_eps=REG_EPS):
  """torchjd's UPGradWeighting in float64: sum_i argmin_{v >= e_i / T} v^T (G/tr G + eps I) v."""
  gram = np.asarray(jacobian, np.float64) @ np.asarray(jacobian, np.float64).T
  quad = gram / np.trace(gram) + reg_eps * np.eye(len(gram))
  return sum(_brute_force_qp(quad, row) for row in np.eye(len(gram)) / len(gram))


JACOBIANS = {
    "two_conflicting": [[1.0, 0.0], [-1.0, 1.0]],
    "three_conflicting": [[1.0, 0.2, 0.0], [-0.9, 0.5, 0.1], [0.1, -1.0, 0.3]],
    "more_tasks_than_dimensions": [[1.0, 0.0], [-0.7, 0.7], [0.0, -1.0], [0.5, 0.5]],
    "seeded_5x8": np.random.default_rng(0).normal(size=(5, 8)),
    "different_scales": [[100.0, 0.0, 0.0], [-0.05, 0.02, 0.0], [0.0, -3.0, 1.0]],
}


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_direction_has_a_non_negative_inner_product_with_every_task_gradient(name):
  jacobian = np.asarray(JACOBIANS[name], np.float64)
  weights = _weights(jacobian)
  gram = jacobian @ jacobian.T
  inner = gram @ weights  # <g_j, d>
  # KKT of the ridged problem: <g_j, d> >= -reg_eps trace(G) w_j (float32 slack on top).
  slack = 1e-5 * np.linalg.norm(jacobian, axis=1) * np.linalg.norm(weights @ jacobian)
  assert (inner >= -REG_EPS * np.trace(gram) * weights - slack).all(), inner


@pytest.mark.parametrize("name", ["two_conflicting", "three_conflicting", "seeded_5x8"])
def test_with_a_negligible_ridge_no_task_conflicts_to_float_precision(name):
  jacobian = np.asarray(JACOBIANS[name], np.float64)  # rows linearly independent
  weights = _weights(jacobian, reg_eps=1e-9)
  direction = weights @ jacobian
  relative = jacobian @ direction / (np.linalg.norm(jacobian, axis=1) * np.linalg.norm(direction))
  assert relative.min() >= -1e-6, relative


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_weights_equal_a_brute_force_solution_of_torchjds_problems(name):
  np.testing.assert_allclose(_weights(JACOBIANS[name]), _reference_weights(JACOBIANS[name]),
                             rtol=2e-4, atol=1e-6)


def test_worked_example_of_two_conflicting_gradients():
  # g1 = (1, 0), g2 = (-1, 1): pi(g1) = (1/2, 1/2) = g1 + g2/2, pi(g2) = (0, 1) = g1 + g2,
  # so the mean of the projections is (1/4, 3/4) = 1.0 g1 + 0.75 g2.
  weights = _weights(JACOBIANS["two_conflicting"], reg_eps=1e-9)
  np.testing.assert_allclose(weights, [1.0, 0.75], rtol=1e-5)


def test_gradients_without_conflict_give_the_mean():
  jacobian = [[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.2, 2.0]]  # all inner products >= 0
  np.testing.assert_allclose(_weights(jacobian), [1 / 3] * 3, rtol=1e-6)


def test_a_preference_vector_weights_the_projections():
  jacobian = [[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.2, 2.0]]
  np.testing.assert_allclose(_weights(jacobian, pref_vector=(0.5, 0.2, 0.3)), [0.5, 0.2, 0.3],
                             rtol=1e-6)


def test_permuting_the_tasks_permutes_the_weights():
  jacobian = np.asarray(JACOBIANS["seeded_5x8"])
  order = [3, 0, 4, 1, 2]
  np.testing.assert_allclose(_weights(jacobian[order]), _weights(jacobian)[order], rtol=1e-5,
                             atol=1e-7)


def test_active_set_solver_stops_converged_well_before_its_cap():
  rng = np.random.default_rng(3)
  solve = jax.jit(jax.vmap(solvers.dual_cone_solve, in_axes=(None, 0)))
  for _ in range(5):
    jacobian = rng.normal(size=(8, 6))
    quad = solvers.regularized_gram(jacobian @ jacobian.T, 1e-4, 1e-4)
    result = solve(quad, jnp.eye(8) / 8)
    assert np.asarray(result.converged).all()
    assert np.asarray(result.iterations).max() <= 2 * 8


@pytest.mark.parametrize("jacobian", [
    [[1.0, 2.0], [0.0, 0.0], [-1.0, 0.5]],  # a zero gradient
    [[1.0, 2.0], [2.0, 4.0]],               # parallel
    [[1.0, 2.0], [-1.0, -2.0]],             # exactly opposite
    [[0.0, 0.0], [0.0, 0.0]],               # nothing at all
], ids=["zero", "parallel", "opposite", "all_zero"])
def test_degenerate_gradients_give_finite_non_conflicting_weights(jacobian):
  jacobian = np.asarray(jacobian)
  weights = _weights(jacobian)
  assert np.isfinite(weights).all() and (weights >= 0).all()
  gram = jacobian @ jacobian.T
  assert (gram @ weights >= -REG_EPS * np.trace(gram) * weights - 1e-6).all()


def test_opposite_gradients_cancel():
  weights = _weights([[1.0, 2.0], [-1.0, -2.0]])
  np.testing.assert_allclose(weights @ np.array([[1.0, 2.0], [-1.0, -2.0]]), 0.0, atol=1e-6)


def test_a_task_without_labels_gets_weight_zero_and_the_others_are_upgrad_without_it():
  jacobian = np.array([[1.0, 0.2, 0.0], [0.0, 0.0, 0.0], [-0.9, 0.5, 0.1]])
  weights = _weights(jacobian, counts=[3, 0, 5])
  assert weights[1] == 0.0
  np.testing.assert_allclose(weights[[0, 2]], _weights(jacobian[[0, 2]]), rtol=1e-5)


def test_tiny_gradients_fall_back_to_the_mean_as_torchjd_unless_norm_eps_is_zero():
  jacobian = 1e-3 * np.asarray(JACOBIANS["three_conflicting"])  # trace(G) ~ 4e-6 < 1e-4
  np.testing.assert_allclose(_weights(jacobian), [1 / 3] * 3, rtol=1e-6)
  np.testing.assert_allclose(_weights(jacobian, norm_eps=0.0),
                             _weights(JACOBIANS["three_conflicting"]), rtol=1e-4)


def test_huge_gradients_are_handled_like_unit_ones():
  jacobian = np.asarray(JACOBIANS["three_conflicting"])
  np.testing.assert_allclose(_weights(1e15 * jacobian), _weights(jacobian), rtol=1e-5)


def test_the_state_keeps_the_last_weights():
  method, update = _method()
  inputs = weighting.make_inputs(np.ones(3), grads=jnp.asarray(JACOBIANS["three_conflicting"]))
  weights, state = update(method.init(3), inputs)
  np.testing.assert_array_equal(state.weights, weights)


def test_reads_only_the_gram_matrix_of_parameter_gradients():
  method = weighting.get("upgrad")
  assert method.needs == "gram" and not method.allows_rep


@pytest.mark.parametrize("kwargs", [{"reg_eps": 0.0}, {"norm_eps": -1.0},
                                    {"pref_vector": (1.0, -1.0)}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="upgrad"):
    weighting.get("upgrad", **kwargs)


def test_the_preference_vector_must_match_the_number_of_tasks():
  with pytest.raises(ValueError, match="2 pref_vector entries for 3 tasks"):
    weighting.get("upgrad", pref_vector=(0.5, 0.5)).init(3)
