"""DB-MTL (Lin et al., 2023): EMA of grad log L_i, each rescaled to the largest norm, summed."""

import numpy as np
import pytest

from mtl_jax import weighting

J = np.array([[1.0, 0.0, 2.0], [0.0, 4.0, -1.0], [0.5, 0.5, 0.0]], np.float32)
LOSSES = np.array([1.0, 2.0, 0.5], np.float32)


def _run(method, steps, counts=None, grads_like=J):
  state = method.init(len(steps[0][0]), grads_like=grads_like)
  for losses, grads in steps:
    result, state = method.update(state, weighting.make_inputs(losses, counts, grads=grads))
  return result, state


def _db_mtl_by_hand(steps, beta=0.9, beta_sigma=0.0):
  """(averages, direction) after DB-MTL's updates on [(losses, J), ...]."""
  m = np.zeros_like(steps[0][1], np.float64)
  for k, (losses, grads) in enumerate(steps, start=1):
    decay = beta / k**beta_sigma
    m = decay * m + (1 - decay) * grads / (losses[:, None] + 1e-8)
  norms = np.linalg.norm(m, axis=1)
  return m, (norms.max() / (norms + 1e-8)) @ m


def test_needs_the_gradients_and_refuses_the_representation_mode():
  method = weighting.get("db_mtl")
  assert (method.needs, method.allows_rep) == ("grads", False)


def test_every_scaled_log_gradient_gets_the_largest_norm():
  result, state = _run(weighting.get("db_mtl", beta=0.0), [(LOSSES, J)])
  log_grads = J / LOSSES[:, None]
  norms = np.linalg.norm(log_grads, axis=1)
  scaled = log_grads * (norms.max() / norms)[:, None]
  np.testing.assert_allclose(np.linalg.norm(scaled, axis=1), norms.max(), rtol=1e-6)
  np.testing.assert_allclose(result.grads, scaled.sum(0), rtol=1e-5)
  np.testing.assert_allclose(state.averages, log_grads, rtol=1e-6)


def test_with_beta_zero_the_weights_combine_this_steps_gradients_into_the_direction():
  result, _ = _run(weighting.get("db_mtl", beta=0.0), [(LOSSES, J)])
  np.testing.assert_allclose(np.asarray(result.weights) @ J, result.grads, rtol=1e-5)


def test_the_direction_does_not_depend_on_the_scale_of_any_loss():
  scales = np.array([1.0, 100.0, 0.01], np.float32)  # L_i -> c_i L_i, g_i -> c_i g_i
  plain, _ = _run(weighting.get("db_mtl"), [(LOSSES, J)] * 2)
  rescaled, _ = _run(weighting.get("db_mtl"), [(LOSSES * scales, J * scales[:, None])] * 2)
  np.testing.assert_allclose(rescaled.grads, plain.grads, rtol=1e-4)


def test_three_updates_follow_the_moving_average_with_decaying_factor():
  steps = [(LOSSES, J), (LOSSES * 0.5, J * 2.0), (LOSSES * 0.8, J[::-1].copy())]
  result, state = _run(weighting.get("db_mtl", beta=0.6, beta_sigma=0.5), steps)
  m, direction = _db_mtl_by_hand(steps, beta=0.6, beta_sigma=0.5)
  np.testing.assert_allclose(state.averages, m, rtol=1e-5)
  np.testing.assert_allclose(result.grads, direction, rtol=1e-5)
  # The weights are the coefficients of the last step's g_i: a_i (1 - beta_3) / L_i.
  norms = np.linalg.norm(m, axis=1)
  expected = norms.max() / norms * (1 - 0.6 / np.sqrt(3)) / (LOSSES * 0.8)
  np.testing.assert_allclose(result.weights, expected, rtol=1e-5)


def test_a_task_without_labels_keeps_its_average_and_is_left_out():
  method = weighting.get("db_mtl")
  _, state = _run(method, [(LOSSES, J)])
  grads = J.copy()
  grads[1] = 0.0
  result, after = method.update(state, weighting.make_inputs([0.8, 0.0, 0.4], [4, 0, 4],
                                                             grads=grads))
  assert np.isfinite(result.grads).all() and result.weights[1] == 0.0
  np.testing.assert_array_equal(after.averages[1], state.averages[1])
  m = np.asarray(after.averages)[[0, 2]]
  norms = np.linalg.norm(m, axis=1)
  np.testing.assert_allclose(result.grads, (norms.max() / norms) @ m, rtol=1e-5)


@pytest.mark.parametrize("grads", [
    [[1.0, 2.0], [0.0, 0.0]],    # a zero gradient
    [[1.0, 2.0], [2.0, 4.0]],    # parallel
    [[1.0, 2.0], [-1.0, -2.0]],  # exactly opposite
])
def test_degenerate_gradients_give_a_finite_direction(grads):
  grads = np.asarray(grads, np.float32)
  result, _ = _run(weighting.get("db_mtl"), [([1.0, 1.0], grads)] * 3, grads_like=grads)
  assert np.isfinite(result.grads).all() and np.isfinite(result.weights).all()
  if not grads[1].any():  # the zero gradient adds nothing and weighs nothing
    assert result.weights[1] == 0.0


def test_without_gradient_buffers_update_says_how_to_build_the_state():
  method = weighting.get("db_mtl")
  with pytest.raises(ValueError, match="grads_like"):
    method.update(method.init(3), weighting.make_inputs(LOSSES, grads=J))


@pytest.mark.parametrize("kwargs", [{"beta": 1.0}, {"beta": -0.1}, {"beta_sigma": -1.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="db_mtl"):
    weighting.get("db_mtl", **kwargs)
