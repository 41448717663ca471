"""ConFIG (Liu et al. 2025): a direction with equal cosine to every task gradient."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting




@functools.lru_cache(maxsize=None)
def _method():
  """The method and its jitted update, built once (compiles are slow)."""
  method = weighting.get("con_fig")
  return method, jax.jit(method.update)


def _weights(jacobian, counts=None):
  jacobian = np.asarray(jacobian, np.float32)
  method, update = _method()
  inputs = weighting.make_inputs(np.ones(len(jacobian)), counts, grads=jnp.asarray(jacobian))
  weights, _ = update(method.init(len(jacobian)), inputs)
  return np.asarray(weights, np.float64)


def _official_direction(jacobian):
  """ConFIG_update in float64: u = unit(pinv(units) 1), d = (sum_i <g_i, u>) u."""
  jacobian = np.asarray(jacobian, np.float64)
  norms = np.linalg.norm(jacobian, axis=1, keepdims=True)
  units = np.divide(jacobian, norms, out=np.zeros_like(jacobian), where=norms > 0)
  best = np.linalg.pinv(units) @ np.ones(len(jacobian))
  unit = best / np.linalg.norm(best)
  return (jacobian @ unit).sum() * unit


JACOBIANS = {
    "two_conflicting": [[1.0, 0.0], [-0.5, 1.0]],
    "three_tasks": [[1.0, 0.2, 0.0, 0.3], [-0.9, 0.5, 0.1, 0.0], [0.1, -1.0, 0.3, 2.0]],
    "seeded_4x6": np.random.default_rng(6).normal(size=(4, 6)),
    "different_scales": [[30.0, 0.0, 0.0], [-0.05, 0.02, 0.0], [0.0, -3.0, 1.0]],
}


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_direction_has_the_same_positive_cosine_with_every_task_gradient(name):
  jacobian = np.asarray(JACOBIANS[name], np.float64)  # rows linearly independent
  direction = _weights(jacobian) @ jacobian
  cosines = jacobian @ direction / (np.linalg.norm(jacobian, axis=1) * np.linalg.norm(direction))
  assert cosines.min() > 0
  np.testing.assert_allclose(cosines, cosines.mean(), rtol=1e-4)


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_length_is_the_sum_of_the_projections_on_the_direction(name):
  jacobian = np.asarray(JACOBIANS[name], np.float64)
  direction = _weights(jacobian) @ jacobian
  unit = direction / np.linalg.norm(direction)
  np.testing.assert_allclose(np.linalg.norm(direction), (jacobian @ unit).sum(), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_direction_equals_the_official_update(name):
  jacobian = np.asarray(JACOBIANS[name], np.float64)
  np.testing.assert_allclose(_weights(jacobian) @ jacobian, _official_direction(jacobian),
                             rtol=1e-4, atol=1e-6)


def test_worked_example_of_two_orthogonal_gradients():
  # u = unit(e1 + e2), <g_i, u> = n_i / sqrt(2): d = (3 + 1) / 2 (e1 + e2) = 2 (e1 + e2).
  jacobian = np.array([[3.0, 0.0], [0.0, 1.0]])
  np.testing.assert_allclose(_weights(jacobian) @ jacobian, [2.0, 2.0], rtol=1e-6)


def test_one_task_gets_its_own_gradient():
  np.testing.assert_allclose(_weights([[0.3, -4.0, 1.0]]), [1.0], rtol=1e-6)


def test_parallel_gradients_add_up_and_opposite_ones_cancel():
  parallel = np.array([[1.0, 2.0], [2.0, 4.0]])  # u = g / ||g||, length ||g|| + 2 ||g||
  np.testing.assert_allclose(_weights(parallel) @ parallel, [3.0, 6.0], rtol=1e-5)
  opposite = np.array([[1.0, 2.0], [-1.0, -2.0]])
  weights = _weights(opposite)
  assert np.isfinite(weights).all()
  np.testing.assert_allclose(weights @ opposite, 0.0, atol=1e-6)


def test_a_zero_gradient_gets_weight_zero_and_the_others_keep_their_direction():
  jacobian = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 0.0]])
  weights = _weights(jacobian)
  assert weights[1] == 0.0
  np.testing.assert_allclose(weights[[0, 2]], _weights(jacobian[[0, 2]]), rtol=1e-5)
  np.testing.assert_array_equal(_weights(np.zeros((2, 3))), 0.0)


def test_a_task_without_labels_gets_weight_zero():
  jacobian = np.array([[1.0, 0.2, 0.0], [0.0, 0.0, 0.0], [-0.9, 0.5, 0.1]])
  weights = _weights(jacobian, counts=[1, 0, 1])
  assert weights[1] == 0.0
  np.testing.assert_allclose(weights[[0, 2]], _weights(jacobian[[0, 2]]), rtol=1e-5)


def test_the_weights_do_not_depend_on_the_scale_of_the_gradients():
  jacobian = np.asarray(JACOBIANS["three_tasks"])
  for scale in (1e-12, 1e12):
    np.testing.assert_allclose(_weights(scale * jacobian), _weights(jacobian), rtol=1e-4)


def test_permuting_the_tasks_permutes_the_weights():
  jacobian = np.asarray(JACOBIANS["seeded_4x6"])
  order = [1, 3, 0, 2]
  np.testing.assert_allclose(_weights(jacobian[order]), _weights(jacobian)[order], rtol=1e-4)


def test_the_state_keeps_the_last_weights():
  method, update = _method()
  inputs = weighting.make_inputs(np.ones(3), grads=jnp.asarray(JACOBIANS["three_tasks"]))
  weights, state = update(method.init(3), inputs)
  np.testing.assert_array_equal(state.weights, weights)


def test_reads_only_the_gram_matrix_of_parameter_gradients():
  method = weighting.get("con_fig")
  assert method.needs == "gram" and not method.allows_rep
