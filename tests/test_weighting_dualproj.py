"""DualProj (Quinton & Rey 2024): the mean gradient projected onto the dual cone."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting

REG_EPS = 1e-4




@functools.lru_cache(maxsize=None)
def _method(**kwargs):
  """The method and its jitted update, built once per hyper-parameters (compiles are slow)."""
  method = weighting.get("dualproj", **kwargs)
  return method, jax.jit(method.update)


def _weights(jacobian, counts=None, **kwargs):
  jacobian = np.asarray(jacobian, np.float32)
  method, update = _method(**kwargs)
  inputs = weighting.make_inputs(np.ones(len(jacobian)), counts, grads=jnp.asarray(jacobian))
  weights, _ = update(method.init(len(jacobian)), inputs)
  return np.asarray(weights, np.float64)


def _closest_non_conflicting(jacobian, target):
  """argmin ||x - target|| subject to J x >= 0, by trying every set of tight rows (float64)."""
  jacobian = np.asarray(jacobian, np.float64)
  best = None
  for size in range(len(jacobian) + 1):
    for tight in itertools.combinations(range(len(jacobian)), size):
      rows = jacobian[list(tight)]
      # Project the target onto {x : rows x = 0}.
      x = target - rows.T @ np.linalg.lstsq(rows @ rows.T, rows @ target, rcond=None)[0] \
          if size else target.copy()
      if (jacobian @ x >= -1e-10).all() and (best is None or np.linalg.norm(x - target) <
                                                  np.linalg.norm(best - target) - 1e-12):
        best = x
  return best


JACOBIANS = {
    "mean_conflicts": [[1.0, 0.0], [-2.0, 1.0]],
    "three_tasks": [[1.0, 0.2, 0.0], [-0.9, 0.5, 0.1], [0.1, -1.0, 0.3]],
    "seeded_4x6": np.random.default_rng(1).normal(size=(4, 6)),
}


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_direction_is_the_closest_non_conflicting_one_to_the_mean_gradient(name):
  jacobian = np.asarray(JACOBIANS[name], np.float64)
  direction = _weights(jacobian, reg_eps=1e-9) @ jacobian
  expected = _closest_non_conflicting(jacobian, jacobian.mean(axis=0))
  np.testing.assert_allclose(direction, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_direction_has_a_non_negative_inner_product_with_every_task_gradient(name):
  jacobian = np.asarray(JACOBIANS[name], np.float64)
  weights = _weights(jacobian)
  gram = jacobian @ jacobian.T
  slack = 1e-5 * np.linalg.norm(jacobian, axis=1) * np.linalg.norm(weights @ jacobian)
  assert (gram @ weights >= -REG_EPS * np.trace(gram) * weights - slack).all()


def test_worked_example_where_the_mean_conflicts_with_one_task():
  # g1 = (1, 0), g2 = (-2, 1): the mean (-1/2, 1/2) has <g1, mean> < 0; its projection onto
  # {x : <g1, x> >= 0} is (0, 1/2), which keeps <g2, x> = 1/2 >= 0: d = 1.0 g1 + 0.5 g2.
  np.testing.assert_allclose(_weights(JACOBIANS["mean_conflicts"], reg_eps=1e-9), [1.0, 0.5],
                             rtol=1e-5)


def test_gradients_without_conflict_give_the_mean_and_a_preference_vector_its_weights():
  jacobian = [[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.2, 2.0]]
  np.testing.assert_allclose(_weights(jacobian), [1 / 3] * 3, rtol=1e-6)
  np.testing.assert_allclose(_weights(jacobian, pref_vector=(0.2, 0.3, 0.5)), [0.2, 0.3, 0.5],
                             rtol=1e-6)


@pytest.mark.parametrize("jacobian", [
    [[1.0, 2.0], [0.0, 0.0], [-1.0, 0.5]],
    [[1.0, 2.0], [2.0, 4.0]],
    [[1.0, 2.0], [-1.0, -2.0]],
    [[0.0, 0.0], [0.0, 0.0]],
], ids=["zero", "parallel", "opposite", "all_zero"])
def test_degenerate_gradients_give_finite_non_conflicting_weights(jacobian):
  jacobian = np.asarray(jacobian)
  weights = _weights(jacobian)
  assert np.isfinite(weights).all() and (weights >= 0).all()
  gram = jacobian @ jacobian.T
  assert (gram @ weights >= -REG_EPS * np.trace(gram) * weights - 1e-6).all()


def test_a_task_without_labels_gets_weight_zero_and_the_mean_is_over_the_others():
  jacobian = np.array([[1.0, 0.2, 0.0], [5.0, -3.0, 0.0], [-0.9, 0.5, 0.1]])
  jacobian_seen = jacobian.copy()
  jacobian_seen[1] = 0.0  # the train step's zero row for an unlabelled task
  weights = _weights(jacobian_seen, counts=[2, 0, 2])
  assert weights[1] == 0.0
  np.testing.assert_allclose(weights[[0, 2]], _weights(jacobian[[0, 2]]), rtol=1e-5)


def test_the_state_keeps_the_last_weights():
  method, update = _method()
  inputs = weighting.make_inputs(np.ones(3), grads=jnp.asarray(JACOBIANS["three_tasks"]))
  weights, state = update(method.init(3), inputs)
  np.testing.assert_array_equal(state.weights, weights)


def test_reads_only_the_gram_matrix_of_parameter_gradients():
  method = weighting.get("dualproj")
  assert method.needs == "gram" and not method.allows_rep


@pytest.mark.parametrize("kwargs", [{"reg_eps": 0.0}, {"pref_vector": (1.0, -1.0)}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="dualproj"):
    weighting.get("dualproj", **kwargs)
