"""MoCo (Fernando et al., ICLR 2023): tracked gradients Y, projected lambda, d = Y^T lambda."""

import itertools

import numpy as np
import pytest

from mtl_jax import weighting

J = np.array([[1.0, 0.0, 2.0], [0.0, 2.0, -1.0], [1.0, 1.0, 0.0]], np.float32)
LOSSES = np.array([1.0, 2.0, 0.5], np.float32)


def _simplex_projection_by_enumeration(v):
  """argmin_{x in simplex} ||x - v||, trying every support set (exact for small T)."""
  best, best_distance = None, np.inf
  for size in range(1, len(v) + 1):
    for support in itertools.combinations(range(len(v)), size):
      x = np.zeros(len(v))
      x[list(support)] = v[list(support)] - (v[list(support)].sum() - 1) / size
      if (x >= 0).all() and np.sum((x - v)**2) < best_distance:
        best, best_distance = x, np.sum((x - v)**2)
  return best


def _moco_by_hand(steps, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0):
  """(y, lambda, direction) after MoCo's updates on [(losses, J), ...], normalised gradients."""
  num_tasks = steps[0][1].shape[0]
  y, lam = np.zeros_like(steps[0][1], np.float64), np.full(num_tasks, 1.0 / num_tasks)
  for k, (losses, grads) in enumerate(steps, start=1):
    h = grads / (np.linalg.norm(grads, axis=1, keepdims=True) + 1e-8) * losses[:, None]
    y = y - beta / k**beta_sigma * (y - h)
    lam = _simplex_projection_by_enumeration(
        lam - gamma / k**gamma_sigma * (y @ y.T + rho * np.eye(num_tasks)) @ lam)
  return y, lam, y.T @ lam


def _run(method, steps, counts=None, grads_like=J):
  state = method.init(len(steps[0][0]), grads_like=grads_like)
  for losses, grads in steps:
    result, state = method.update(state, weighting.make_inputs(losses, counts, grads=grads))
  return result, state


def test_needs_the_gradients_and_refuses_the_representation_mode():
  method = weighting.get("moco")
  assert (method.needs, method.allows_rep) == ("grads", False)


def test_one_update_tracks_the_normalised_gradients_and_steps_lambda_on_the_simplex():
  result, state = _run(weighting.get("moco"), [(LOSSES, J)])
  y, lam, direction = _moco_by_hand([(LOSSES, J)])
  np.testing.assert_allclose(state.tracking, y, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(state.lambdas, lam, rtol=1e-5, atol=1e-7)
  assert isinstance(result, weighting.Direction)
  np.testing.assert_allclose(result.grads, direction, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(result.weights, lam, rtol=1e-5, atol=1e-7)


def test_three_updates_use_decaying_step_sizes_and_the_rho_term():
  steps = [(LOSSES, J), (LOSSES * 0.8, J * 1.5), (LOSSES * 0.5, J[::-1].copy())]
  kwargs = {"beta": 0.3, "beta_sigma": 0.5, "gamma": 0.5, "gamma_sigma": 0.3, "rho": 0.2}
  result, state = _run(weighting.get("moco", **kwargs), steps)
  y, lam, direction = _moco_by_hand(steps, **kwargs)
  np.testing.assert_allclose(state.tracking, y, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(state.lambdas, lam, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result.grads, direction, rtol=1e-5, atol=1e-6)
  assert state.count == 3


def test_without_normalisation_y_tracks_the_raw_gradients():
  _, state = _run(weighting.get("moco", normalize=False, beta=1.0), [(LOSSES, J)])
  np.testing.assert_allclose(state.tracking, J, rtol=1e-6)


def test_gradients_as_a_pytree_give_a_direction_of_the_same_structure():
  grads = {"kernel": J[:, :2].reshape(3, 2, 1), "bias": J[:, 2]}
  result, _ = _run(weighting.get("moco"), [(LOSSES, grads)], grads_like=grads)
  _, _, direction = _moco_by_hand([(LOSSES, J)])
  np.testing.assert_allclose(result.grads["kernel"].ravel(), direction[:2], rtol=1e-5)
  np.testing.assert_allclose(result.grads["bias"], direction[2], rtol=1e-5)


def test_a_task_without_labels_keeps_y_and_lambda_and_gets_weight_zero():
  method = weighting.get("moco", gamma=1.0)
  _, state = _run(method, [(LOSSES, J)])
  grads = J.copy()
  grads[1] = 0.0
  result, after = method.update(state, weighting.make_inputs([0.8, 0.0, 0.4], [4, 0, 4],
                                                             grads=grads))
  assert np.isfinite(result.grads).all() and result.weights[1] == 0.0
  np.testing.assert_array_equal(after.tracking[1], state.tracking[1])
  assert after.lambdas[1] == state.lambdas[1]
  np.testing.assert_allclose(after.lambdas.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(result.weights.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(result.grads, np.asarray(result.weights) @ np.asarray(after.tracking),
                             rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("grads", [
    [[1.0, 2.0], [0.0, 0.0]],    # a zero gradient
    [[1.0, 2.0], [2.0, 4.0]],    # parallel
    [[1.0, 2.0], [-1.0, -2.0]],  # exactly opposite
])
def test_degenerate_gradients_give_a_finite_direction(grads):
  grads = np.asarray(grads, np.float32)
  result, state = _run(weighting.get("moco"), [([1.0, 1.0], grads)] * 3, grads_like=grads)
  assert np.isfinite(result.grads).all() and np.isfinite(result.weights).all()
  np.testing.assert_allclose(state.lambdas.sum(), 1.0, rtol=1e-6)


def test_without_gradient_buffers_update_says_how_to_build_the_state():
  method = weighting.get("moco")
  with pytest.raises(ValueError, match="grads_like"):
    method.update(method.init(3), weighting.make_inputs(LOSSES, grads=J))


def test_grads_like_must_have_one_row_per_task():
  with pytest.raises(ValueError, match="3 tasks"):
    weighting.get("moco").init(3, grads_like=J[:2])


@pytest.mark.parametrize("kwargs", [{"beta": 0.0}, {"beta": 1.5}, {"gamma": 0.0}, {"rho": -1.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="moco"):
    weighting.get("moco", **kwargs)
