"""MoDo (Chen et al., NeurIPS 2023): lambda <- Pi_simplex(lambda - gamma (G + rho I) lambda)."""

import itertools

import jax
import numpy as np
import pytest
from scipy import optimize

from mtl_jax import weighting

J = np.array([[1.0, 0.0, 2.0], [0.0, 2.0, -1.0], [-1.0, 1.0, 0.0]], np.float32)
LOSSES = np.ones(3, np.float32)


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


def _regularised_min_norm(gram, rho):
  """argmin_{lambda in simplex} lambda^T (G + rho I) lambda, by scipy's SLSQP."""
  quad = gram + rho * np.eye(len(gram))
  n = len(gram)
  result = optimize.minimize(lambda x: x @ quad @ x, np.full(n, 1.0 / n),
                             jac=lambda x: 2 * quad @ x, bounds=[(0, 1)] * n,
                             method="SLSQP", options={"ftol": 1e-14},
                             constraints={"type": "eq", "fun": lambda x: x.sum() - 1})
  return result.x


def test_is_a_gram_method_allowed_on_representation_gradients():
  method = weighting.get("modo")
  assert (method.needs, method.allows_rep) == ("gram", True)


def test_one_update_is_a_projected_gradient_step_on_the_regularised_min_norm_objective():
  method = weighting.get("modo", gamma=0.2, rho=0.1)
  w, state = method.update(method.init(3), weighting.make_inputs(LOSSES, grads=J))
  lam = np.full(3, 1 / 3)
  expected = _simplex_projection_by_enumeration(lam - 0.2 * (J @ J.T @ lam + 0.1 * lam))
  np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(state.lambdas, expected, rtol=1e-5, atol=1e-7)


def test_repeated_updates_on_one_gram_matrix_reach_the_regularised_min_norm_weights():
  method = weighting.get("modo", gamma=0.05, rho=0.1)
  update, state = jax.jit(method.update), method.init(3)
  inputs = weighting.make_inputs(LOSSES, grads=J)
  for _ in range(500):
    w, state = update(state, inputs)
  np.testing.assert_allclose(w, _regularised_min_norm(J @ J.T, 0.1), atol=1e-4)


def test_the_default_step_moves_lambda_little_from_uniform():
  w, _ = weighting.get("modo").update(weighting.get("modo").init(3),
                                       weighting.make_inputs(LOSSES, grads=J))
  np.testing.assert_allclose(w, np.full(3, 1 / 3), atol=1e-2)
  np.testing.assert_allclose(np.sum(w), 1.0, rtol=1e-6)


def test_a_task_without_labels_keeps_lambda_and_the_others_move_on_their_face():
  method = weighting.get("modo", gamma=0.5, rho=0.0)
  state = method.init(3)._replace(lambdas=np.array([0.2, 0.5, 0.3], np.float32))
  grads = J.copy()
  grads[1] = 0.0
  w, after = method.update(state, weighting.make_inputs([1.0, 0.0, 1.0], [4, 0, 4], grads=grads))
  w, lambdas = np.asarray(w), np.asarray(after.lambdas)
  assert np.isfinite(w).all() and w[1] == 0.0
  assert lambdas[1] == 0.5
  # The labelled pair moves as a two-task MoDo from (0.4, 0.6) and keeps its mass 0.5.
  pair = J[[0, 2]]
  mu = _simplex_projection_by_enumeration(np.array([0.4, 0.6]) - 0.5 * pair @ pair.T @ [0.4, 0.6])
  np.testing.assert_allclose(w[[0, 2]], mu, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(lambdas[[0, 2]], 0.5 * mu, rtol=1e-5, atol=1e-7)


def test_a_step_without_labels_gives_zero_weights_and_keeps_the_state():
  method = weighting.get("modo")
  state = method.init(2)
  w, after = method.update(state, weighting.make_inputs([0.0, 0.0], [0, 0], grads=np.zeros((2, 2))))
  np.testing.assert_array_equal(w, [0.0, 0.0])
  np.testing.assert_array_equal(after.lambdas, state.lambdas)


@pytest.mark.parametrize("grads", [
    [[1.0, 2.0], [0.0, 0.0]],    # a zero gradient: the min-norm point is that task alone
    [[1.0, 2.0], [2.0, 4.0]],    # parallel
    [[1.0, 2.0], [-1.0, -2.0]],  # exactly opposite
])
def test_degenerate_gradients_give_finite_weights_on_the_simplex(grads):
  method = weighting.get("modo", gamma=0.1)
  state = method.init(2)
  for _ in range(50):
    w, state = method.update(state, weighting.make_inputs([1.0, 1.0], grads=np.asarray(grads)))
  assert np.isfinite(w).all() and (w >= 0).all()
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  if not np.any(grads[1]):
    assert w[1] > w[0]


@pytest.mark.parametrize("kwargs", [{"gamma": 0.0}, {"rho": -1.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="modo"):
    weighting.get("modo", **kwargs)
