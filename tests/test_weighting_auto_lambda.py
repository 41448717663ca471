"""Auto-λ (Liu et al., TMLR 2022): weights trained through a one-step look-ahead."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import auto_lambda

TASKS = ("a", "b", "c")
RNG = np.random.default_rng(0)
X_TRAIN, X_VAL = RNG.normal(size=(8, 4)), RNG.normal(size=(6, 4))
Y_TRAIN, Y_VAL = RNG.normal(size=(8, 3)), RNG.normal(size=(6, 3))
PARAMS = {"w": jnp.asarray(RNG.normal(size=(4, 5)), jnp.float32),
          "heads": jnp.asarray(RNG.normal(size=(5, 3)), jnp.float32)}


def _losses(params, x, y):
  """f32[3]: mean squared errors of three heads on a shared tanh layer."""
  return jnp.mean((jnp.tanh(x @ params["w"]) @ params["heads"] - y) ** 2, axis=0)


def _train_losses(params):
  return _losses(params, X_TRAIN, Y_TRAIN)


def _val_losses(params):
  return _losses(params, X_VAL, Y_VAL)


LOOKAHEAD = weighting.Lookahead(PARAMS, _train_losses, _val_losses)


def _unrolled_val_loss(weights, primary, alpha, params=PARAMS):
  """L^val_pri(theta - alpha grad sum_i lambda_i L_i^train(theta)), as a function of lambda."""
  grads = jax.grad(lambda p: jnp.dot(weights, _train_losses(p)))(params)
  virtual = jax.tree.map(lambda p, g: p - alpha * g, params, grads)
  return jnp.dot(primary, _val_losses(virtual))


# Jitted once for the whole file (eager grads of grads compile every primitive).
_meta_gradient = jax.jit(auto_lambda.meta_gradient)
_unrolled_gradient = jax.jit(jax.grad(_unrolled_val_loss))


@pytest.mark.parametrize("primary", [(1.0, 1.0, 1.0), (0.0, 1.0, 0.0)])
def test_the_meta_gradient_is_the_derivative_of_the_unrolled_validation_loss(primary):
  weights, primary, alpha = jnp.array([0.1, 0.3, 0.2]), jnp.array(primary), 0.05
  ours = _meta_gradient(LOOKAHEAD, weights, primary, alpha)
  np.testing.assert_allclose(ours, _unrolled_gradient(weights, primary, alpha),
                             rtol=1e-4, atol=1e-8)


@jax.jit
def _official_finite_difference(weights, primary, alpha):
  """compute_hessian: -alpha (L^train(theta + eps d) - L^train(theta - eps d)) / (2 eps), with
  d = grad L^val_pri(theta') and eps = 0.01 / ||d||."""
  grads = jax.grad(lambda p: jnp.dot(weights, _train_losses(p)))(PARAMS)
  virtual = jax.tree.map(lambda p, g: p - alpha * g, PARAMS, grads)
  d = jax.grad(lambda p: jnp.dot(primary, _val_losses(p)))(virtual)
  eps = 0.01 / jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(d)))
  shifted = lambda sign: _train_losses(jax.tree.map(lambda p, v: p + sign * eps * v, PARAMS, d))
  return -alpha * (shifted(1.0) - shifted(-1.0)) / (2 * eps)


def test_the_meta_gradient_matches_the_official_finite_difference():
  weights, primary, alpha = jnp.full(3, 0.1), jnp.ones(3), 0.05
  np.testing.assert_allclose(_meta_gradient(LOOKAHEAD, weights, primary, alpha),
                             _official_finite_difference(weights, primary, alpha), rtol=2e-2)


METHOD = weighting.get("auto_lambda", learning_rate=0.05, meta_learning_rate=1e-2)
_update = jax.jit(METHOD.update)


def test_one_step_moves_each_weight_by_adams_first_step_against_its_meta_gradient():
  state = METHOD.init(TASKS)
  np.testing.assert_array_equal(state.weights, np.full(3, 0.1, np.float32))
  weights, state = _update(state, weighting.make_inputs(_train_losses(PARAMS),
                                                        lookahead=LOOKAHEAD))
  gradient = _unrolled_gradient(jnp.full(3, 0.1), jnp.ones(3), 0.05)
  np.testing.assert_allclose(weights, 0.1 - 1e-2 * np.sign(gradient), rtol=1e-5)
  np.testing.assert_array_equal(state.weights, weights)


def test_the_virtual_step_uses_the_runs_learning_rate_at_this_step():
  schedule = lambda step: 0.5 / (1.0 + step)  # alpha 0.5 at step 0, 0.1 at step 4
  method = weighting.get("auto_lambda", learning_rate=schedule, meta_learning_rate=1.0)
  inputs = weighting.make_inputs(_train_losses(PARAMS), step=4, lookahead=LOOKAHEAD)
  _, new = jax.jit(method.update)(method.init(TASKS), inputs)
  gradient = _unrolled_gradient(jnp.full(3, 0.1), jnp.ones(3), 0.1)
  np.testing.assert_allclose(new.adam[0].mu, 0.1 * gradient, rtol=1e-4)  # Adam's first moment


def test_a_task_without_labels_gets_weight_zero_and_keeps_its_lambda_and_moments():
  state = METHOD.init(TASKS)
  inputs = weighting.make_inputs(_train_losses(PARAMS), counts=[4, 0, 4], lookahead=LOOKAHEAD)
  weights, new = _update(state, inputs)
  assert weights[1] == 0.0 and new.weights[1] == state.weights[1]
  assert new.adam[0].mu[1] == 0.0 and new.weights[0] != state.weights[0]


def test_primary_tasks_are_checked_by_name_and_a_missing_lookahead_is_an_error():
  with pytest.raises(ValueError, match="primary_tasks must name some of the tasks"):
    weighting.get("auto_lambda", primary_tasks=("z",)).init(TASKS)
  state = weighting.get("auto_lambda", primary_tasks=("b",)).init(TASKS)
  np.testing.assert_array_equal(state.primary, [0.0, 1.0, 0.0])
  method = weighting.get("auto_lambda")
  with pytest.raises(ValueError, match="reads a validation batch"):
    method.update(method.init(TASKS), weighting.make_inputs(np.ones(3)))
  with pytest.raises(ValueError, match="auto_lambda"):
    weighting.get("auto_lambda", meta_learning_rate=0.0)
