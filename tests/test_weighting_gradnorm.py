"""GradNorm (Chen et al., ICML 2018): weights trained on sum_i |w_i n_i - mean(w n) r_i^alpha|."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import gradnorm

# Three tasks whose gradients have norms 1, 2 and 3.
J = np.diag([1.0, 2.0, 3.0]).astype(np.float32)


def _step(method, state, losses, grads=J, counts=None):
  w, state = method.update(state, weighting.make_inputs(losses, counts, grads=grads))
  return np.asarray(w), state


def test_is_a_gram_method_allowed_on_representation_gradients():
  method = weighting.get("gradnorm")
  assert (method.needs, method.allows_rep) == ("gram", True)


def test_first_step_uses_weight_one_then_one_gradient_step_renormalised_to_sum_t():
  method = weighting.get("gradnorm", optimizer=optax.sgd(0.1))
  w, state = _step(method, method.init(3), [1.0, 2.0, 4.0])
  np.testing.assert_array_equal(w, [1.0, 1.0, 1.0])
  np.testing.assert_allclose(state.initial_losses, [1.0, 2.0, 4.0])
  # r_i = 1, target = mean_j(w_j n_j) = 2: dL_grad/dw = sign(w n - 2) n = (-1, 0, 3).
  by_hand = np.array([1.0, 1.0, 1.0]) - 0.1 * np.array([-1.0, 0.0, 3.0])
  np.testing.assert_allclose(state.weights, 3 * by_hand / by_hand.sum(), rtol=1e-6)


def test_targets_are_the_mean_weighted_norm_times_the_relative_inverse_training_rate():
  weights, norms = jnp.array([1.0, 0.5, 2.0]), jnp.array([2.0, 4.0, 1.0])
  ratios = jnp.array([0.5, 1.0, 1.5])  # L_i(t) / L_i(0); their mean is 1
  targets = gradnorm.gradnorm_targets(weights, norms, ratios, jnp.ones(3, bool), alpha=1.5)
  np.testing.assert_allclose(targets, 2.0 * np.array([0.5, 1.0, 1.5])**1.5, rtol=1e-6)


def test_the_weight_gradient_is_that_of_the_gradnorm_loss_with_the_target_held_constant():
  weights, norms = jnp.array([1.0, 0.5, 2.0]), jnp.array([2.0, 4.0, 1.0])
  targets, mask = jnp.array([1.5, 2.5, 2.5]), jnp.ones(3, bool)
  np.testing.assert_allclose(gradnorm.gradnorm_gradient(weights, norms, targets, mask),
                             jax.grad(gradnorm.gradnorm_loss)(weights, norms, targets, mask))


def test_a_task_that_trains_slower_gets_a_higher_target_and_gains_weight():
  method = weighting.get("gradnorm", optimizer=optax.sgd(0.01))
  equal_norms = np.eye(2, dtype=np.float32)
  _, state = _step(method, method.init(2), [1.0, 1.0], equal_norms)
  # Task 0's loss halved, task 1's did not: r = (2/3, 4/3), so task 1's target is larger.
  _, state = _step(method, state, [0.5, 1.0], equal_norms)
  assert state.weights[1] > 1.0 > state.weights[0]
  np.testing.assert_allclose(state.weights.sum(), 2.0, rtol=1e-6)


def test_with_equal_training_rates_the_weighted_gradient_norms_equalise():
  method = weighting.get("gradnorm", optimizer=optax.sgd(0.002))
  update = jax.jit(method.update)
  state, inputs = method.init(3), weighting.make_inputs([1.0, 1.0, 1.0], grads=J)
  for _ in range(400):
    _, state = update(state, inputs)
  weighted_norms = np.asarray(state.weights) * np.array([1.0, 2.0, 3.0])
  np.testing.assert_allclose(weighted_norms, weighted_norms.mean(), rtol=0.02)
  np.testing.assert_allclose(state.weights, 3 * np.array([6, 3, 2]) / 11, rtol=0.02)


def test_a_task_without_labels_gets_weight_zero_and_keeps_its_state():
  method = weighting.get("gradnorm", optimizer=optax.adam(0.1))
  _, state = _step(method, method.init(3), [1.0, 2.0, 4.0])
  grads = J.copy()
  grads[1] = 0.0
  w, after = _step(method, state, [0.5, 0.0, 3.0], grads, counts=[4, 0, 4])
  assert np.isfinite(w).all() and w[1] == 0.0
  assert after.weights[1] == state.weights[1]
  assert after.initial_losses[1] == 2.0
  np.testing.assert_allclose(after.weights.sum(), 3.0, rtol=1e-6)
  mu, nu = after.opt_state[0].mu, after.opt_state[0].nu  # Adam's moments of task 1 stay
  assert mu[1] == state.opt_state[0].mu[1] and nu[1] == state.opt_state[0].nu[1]


def test_the_first_labelled_step_sets_a_late_tasks_initial_loss():
  method = weighting.get("gradnorm")
  _, state = _step(method, method.init(2), [1.0, 0.0], np.eye(2, dtype=np.float32) * [[1], [0]],
                   counts=[4, 0])
  assert not state.has_initial[1]
  _, state = _step(method, state, [0.8, 3.0], np.eye(2, dtype=np.float32))
  np.testing.assert_allclose(state.initial_losses, [1.0, 3.0])


@pytest.mark.parametrize("grads", [
    [[1.0, 2.0], [0.0, 0.0]],    # a zero gradient
    [[1.0, 2.0], [2.0, 4.0]],    # parallel
    [[1.0, 2.0], [-1.0, -2.0]],  # exactly opposite
])
def test_degenerate_gradients_give_finite_positive_weights(grads):
  method = weighting.get("gradnorm", optimizer=optax.sgd(1.0))
  state = method.init(2)
  for losses in ([1.0, 1.0], [0.5, 1.0], [0.2, 1.0]):
    w, state = _step(method, state, losses, np.asarray(grads, np.float32))
    assert np.isfinite(w).all() and (w > 0).all()
  np.testing.assert_allclose(state.weights.sum(), 2.0, rtol=1e-6)


def test_negative_alpha_is_a_value_error():
  with pytest.raises(ValueError, match="gradnorm"):
    weighting.get("gradnorm", alpha=-1.0)
