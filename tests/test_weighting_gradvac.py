"""GradVac (Wang et al., ICLR 2021): pairwise gradient similarity raised to an EMA target."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import base, gradvac




@functools.cache
def _method(name="gradvac", **kwargs):
  """One method per hyper-parameters, so that tests share its compiled update."""
  return weighting.get(name, **kwargs)


@functools.cache
def _update(method):
  return jax.jit(method.update)


def _step(method, state, jacobian, counts=None, key=None):
  jacobian = jnp.asarray(jacobian, jnp.float32)
  inputs = weighting.make_inputs(np.ones(len(jacobian)), counts, key=key, grads=jacobian)
  w, state = _update(method)(state, inputs)
  return np.asarray(w, np.float64), state


def _gradvac_by_hand(jacobian, targets, orders, beta):
  """Algorithm 1 on the gradients themselves (float64): (sum_i g_i', new targets)."""
  jacobian = np.asarray(jacobian, np.float64)
  targets = np.array(targets, np.float64)
  vaccinated = jacobian.copy()
  for i, order in enumerate(orders):
    for j in order:
      if j == i:
        continue
      g_i, g_j = vaccinated[i], jacobian[j]
      phi = g_i @ g_j / (np.linalg.norm(g_i) * np.linalg.norm(g_j))
      target = targets[i, j]
      if phi < target:
        vaccinated[i] = g_i + np.linalg.norm(g_i) * (
            target * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - target**2)) / (
                np.linalg.norm(g_j) * np.sqrt(1 - target**2)) * g_j
      targets[i, j] = (1 - beta) * target + beta * phi
  return vaccinated.sum(0), targets


def test_a_corrected_pair_reaches_the_target_similarity_exactly():
  jacobian = np.array([[1.0, 0.0], [0.0, 2.0]])  # cos = 0 < target 0.5
  gram = jnp.asarray(jacobian @ jacobian.T, jnp.float32)
  targets = jnp.array([[0.0, 0.5], [0.5, 0.0]])
  coefficients, new_targets = gradvac.vaccinate(gram, targets, jnp.array([[0, 1], [1, 0]]),
                                                jnp.ones(2, bool), beta=0.5, tol=0.0, eps=1e-8)
  vaccinated = np.asarray(coefficients) @ jacobian
  for i, j in ((0, 1), (1, 0)):
    cosine = vaccinated[i] @ jacobian[j] / (np.linalg.norm(vaccinated[i])
                                            * np.linalg.norm(jacobian[j]))
    np.testing.assert_allclose(cosine, 0.5, atol=1e-6)
  # phi_hat <- (1 - beta) 0.5 + beta * 0 (the similarity measured before the correction).
  np.testing.assert_allclose(new_targets, [[0.0, 0.25], [0.25, 0.0]], atol=1e-7)


def test_the_first_step_is_pcgrad_because_the_targets_start_at_zero():
  jacobian = np.random.default_rng(0).normal(size=(4, 3))
  key = jax.random.PRNGKey(1)
  method = _method()
  w, state = _step(method, method.init(4), jacobian, key=key)
  pc = _method("pcgrad")
  w_pc, _ = _step(pc, pc.init(4), jacobian, key=key)
  np.testing.assert_allclose(w, w_pc, atol=1e-5)
  # Each task's first visit measures cos(g_i, g_j) before any correction: phi_hat = beta * cos.
  cosines = jacobian @ jacobian.T / np.outer(*(2 * [np.linalg.norm(jacobian, axis=1)]))
  orders = np.asarray(base.task_orders(key, 4))
  for i, order in enumerate(orders):
    first = [j for j in order if j != i][0]
    np.testing.assert_allclose(state.targets[i, first], 0.5 * cosines[i, first], atol=1e-6)


def test_three_steps_equal_algorithm_1_on_the_gradients():
  rng = np.random.default_rng(2)
  method = _method(beta=0.3, tol=0.0)
  state = method.init(3)
  targets = np.zeros((3, 3))
  for step in range(3):
    jacobian = rng.normal(size=(3, 4)) + np.array([1.0, 0.0, 0.0, 0.0])
    key = jax.random.PRNGKey(step)
    w, state = _step(method, state, jacobian, key=key)
    orders = np.asarray(base.task_orders(key, 3))
    expected, targets = _gradvac_by_hand(jacobian, targets, orders, beta=0.3)
    np.testing.assert_allclose(w @ jacobian, expected, atol=1e-4)
    np.testing.assert_allclose(state.targets, targets, atol=1e-5)


def test_pairs_above_their_target_pass_unchanged():
  jacobian = np.array([[1.0, 0.2], [0.3, 1.0]])  # cos > 0 = the initial target
  method = _method()
  w, _ = _step(method, method.init(2), jacobian)
  np.testing.assert_array_equal(w, [1.0, 1.0])


def test_identical_gradients_stay_uncorrected_as_their_target_tends_to_one():
  method = _method()
  state = method.init(2)
  for step in range(40):
    w, state = _step(method, state, [[0.3, -1.7, 0.9], [0.3, -1.7, 0.9]],
                     key=jax.random.PRNGKey(step))
    np.testing.assert_allclose(w, [1.0, 1.0])
  assert np.asarray(state.targets)[0, 1] > 0.999


@pytest.mark.parametrize("jacobian, weights", [
    ([[1.0, 2.0], [0.0, 0.0]], [1.0, 1.0]),     # a zero gradient: cosine 0, nothing to add
    ([[1.0, -2.0], [-1.0, 2.0]], [2.0, 2.0]),   # exactly opposite: the PCGrad projection, d = 0
])
def test_degenerate_gradients(jacobian, weights):
  method = _method()
  w, state = _step(method, method.init(2), jacobian)
  np.testing.assert_allclose(w, weights, atol=1e-6)
  assert np.isfinite(np.asarray(state.targets)).all()


def test_a_task_without_labels_gets_weight_zero_and_keeps_its_targets():
  method = _method()
  state = method.init(3)._replace(targets=jnp.full((3, 3), 0.2))
  jacobian = [[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]]
  w, new_state = _step(method, state, jacobian, counts=[2, 0, 2])
  assert np.isfinite(w).all() and w[1] == 0.0
  targets = np.asarray(new_state.targets)
  np.testing.assert_array_equal(targets[1], np.float32([0.2, 0.2, 0.2]))
  np.testing.assert_array_equal(targets[:, 1], np.float32([0.2, 0.2, 0.2]))
  assert targets[0, 2] != np.float32(0.2)


def test_gradvac_reads_only_the_gram_matrix():
  method = _method()
  assert method.needs == "gram" and not method.allows_rep


@pytest.mark.parametrize("kwargs", [{"beta": 1.5}, {"tol": -1.0}, {"eps": 0.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="gradvac"):
    weighting.get("gradvac", **kwargs)
