"""PCGrad (Yu et al., NeurIPS 2020): conflicting gradients projected onto each other's normal plane."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import base, pcgrad




@functools.cache
def _method(**kwargs):
  """The method and its jitted update, built once per hyper-parameters (compiles are slow)."""
  method = weighting.get("pcgrad", **kwargs)
  return method, jax.jit(method.update)


def _weights(jacobian, counts=None, key=None):
  jacobian = jnp.asarray(jacobian, jnp.float32)
  method, update = _method()
  inputs = weighting.make_inputs(np.ones(len(jacobian)), counts, key=key, grads=jacobian)
  w, _ = update(method.init(len(jacobian)), inputs)
  return np.asarray(w, np.float64)


def _projected_by_hand(jacobian, orders):
  """Algorithm 1 on the gradients themselves: rows g_i^PC, task i visiting orders[i]."""
  jacobian = np.asarray(jacobian, np.float64)
  projected = jacobian.copy()
  for i, order in enumerate(orders):
    for j in order:
      dot = projected[i] @ jacobian[j]
      if j != i and dot < 0:
        projected[i] -= dot / (jacobian[j] @ jacobian[j]) * jacobian[j]
  return projected


def test_a_conflicting_pair_is_projected_to_non_negative_inner_products():
  jacobian = np.array([[1.0, 0.0], [-1.0, 1.0]])  # <g1, g2> = -1
  coefficients = np.asarray(pcgrad.projection_coefficients(
      jnp.asarray(jacobian @ jacobian.T, jnp.float32), jnp.array([[0, 1], [0, 1]]),
      jnp.ones(2, bool)))
  projected = coefficients @ jacobian
  # g1^PC = g1 - (-1/2) g2 = (0.5, 0.5); g2^PC = g2 - (-1) g1 = (0, 1).
  np.testing.assert_allclose(projected, [[0.5, 0.5], [0.0, 1.0]], atol=1e-6)
  assert projected[0] @ jacobian[1] >= -1e-6 and projected[1] @ jacobian[0] >= -1e-6
  np.testing.assert_allclose(_weights(jacobian), [2.0, 1.5], atol=1e-6)  # d = (0.5, 1.5)


def test_non_conflicting_gradients_pass_unchanged():
  jacobian = np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 2.0]])  # all <g_i, g_j> >= 0
  np.testing.assert_array_equal(_weights(jacobian), [1.0, 1.0, 1.0])


def test_a_task_that_conflicts_with_none_passes_unchanged_while_others_are_projected():
  jacobian = np.array([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
  gram = jnp.asarray(jacobian @ jacobian.T, jnp.float32)
  orders = base.task_orders(jax.random.PRNGKey(3), 3)
  coefficients = np.asarray(pcgrad.projection_coefficients(gram, orders, jnp.ones(3, bool)))
  np.testing.assert_array_equal(coefficients[2], [0.0, 0.0, 1.0])
  projected = coefficients @ jacobian
  assert projected[0] @ jacobian[1] >= -1e-6 and projected[1] @ jacobian[0] >= -1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_gram_only_projections_equal_algorithm_1_on_the_gradients(seed):
  rng = np.random.default_rng(seed)
  jacobian = rng.normal(size=(5, 4))
  orders = base.task_orders(jax.random.PRNGKey(seed), 5)
  coefficients = np.asarray(pcgrad.projection_coefficients(
      jnp.asarray(jacobian @ jacobian.T, jnp.float32), orders, jnp.ones(5, bool)))
  expected = _projected_by_hand(jacobian, np.asarray(orders))
  np.testing.assert_allclose(coefficients @ jacobian, expected, atol=1e-5)
  # The weights stand for sum_i g_i^PC, under the key the method is given.
  key = jax.random.PRNGKey(seed)
  expected_sum = _projected_by_hand(jacobian, np.asarray(base.task_orders(key, 5))).sum(0)
  np.testing.assert_allclose(_weights(jacobian, key=key) @ jacobian, expected_sum, atol=1e-5)


def test_each_task_draws_its_order_from_the_key():
  orders = np.asarray(base.task_orders(jax.random.PRNGKey(0), 6))
  assert all(sorted(row) == list(range(6)) for row in orders)
  assert len({tuple(row) for row in orders}) > 1
  np.testing.assert_array_equal(orders, base.task_orders(jax.random.PRNGKey(0), 6))
  # With three mutually conflicting tasks the result depends on the order, hence on the key.
  jacobian = np.array([[1.0, 0.0], [-0.6, 0.8], [-0.6, -0.8]])
  results = {tuple(np.round(_weights(jacobian, key=jax.random.PRNGKey(s)), 5)) for s in range(8)}
  assert len(results) > 1


@pytest.mark.parametrize("jacobian, weights", [
    ([[1.0, 2.0], [0.0, 0.0]], [1.0, 1.0]),     # a zero gradient conflicts with nothing
    ([[1.0, 1.0], [3.0, 3.0]], [1.0, 1.0]),     # parallel
    ([[1.0, -2.0], [-1.0, 2.0]], [2.0, 2.0]),   # exactly opposite: both project to 0, d = 0
])
def test_degenerate_gradients(jacobian, weights):
  w = _weights(jacobian)
  np.testing.assert_allclose(w, weights, atol=1e-6)


def test_all_zero_gradients_give_weight_one_each():
  np.testing.assert_array_equal(_weights(np.zeros((3, 2))), [1.0, 1.0, 1.0])


def test_a_task_without_labels_gets_weight_zero_and_projects_nothing():
  jacobian = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]])
  w = _weights(jacobian, counts=[2, 0, 2])
  np.testing.assert_allclose(w, [2.0, 0.0, 1.5], atol=1e-6)
  np.testing.assert_array_equal(_weights(jacobian, counts=[0, 0, 0]), [0.0, 0.0, 0.0])


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_the_weights_do_not_depend_on_the_gradient_scale(scale):
  jacobian = np.random.default_rng(4).normal(size=(4, 3))
  np.testing.assert_allclose(_weights(scale * jacobian), _weights(jacobian), rtol=1e-4)


def test_pcgrad_reads_only_the_gram_matrix():
  method = weighting.get("pcgrad")
  assert method.needs == "gram" and not method.allows_rep
