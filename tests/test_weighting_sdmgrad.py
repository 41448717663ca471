"""SDMGrad (Xiao et al., NeurIPS 2023): w on the simplex regularised toward the mean gradient."""

import itertools

import jax
import numpy as np
import pytest
from scipy import optimize

from mtl_jax import weighting

from compile_options import FULL_OPTIMIZATION

J = np.array([[1.0, 0.0, 2.0], [0.0, 2.0, -1.0], [-1.0, 1.0, 0.0]], np.float32)
LOSSES = np.ones(3, np.float32)
PAPER = {"scale_by_tasks": False, "max_norm": 0.0}  # d itself, as LibMTL and torchjd


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


def _official_inner_loop(gram, w, lamda=0.3, niter=20, lr=10.0, momentum=0.5):
  """The official code's loop: torch SGD with momentum on G/s^2, projected after each step."""
  scaled = gram / np.mean(np.sqrt(np.diag(gram) + 1e-4))**2
  target = lamda * scaled.mean(1)
  buffer = None
  for _ in range(niter):
    grad = scaled @ w + target
    buffer = grad if buffer is None else momentum * buffer + grad
    w = _simplex_projection_by_enumeration(w - lr * buffer)
  return w


def _regularised_optimum(gram, lamda):
  """argmin_{w in simplex} (1/2) w^T G w + lamda w^T G 1/T, by scipy's SLSQP."""
  n = len(gram)
  linear = lamda * gram.mean(1)
  result = optimize.minimize(lambda w: 0.5 * w @ gram @ w + linear @ w, np.full(n, 1.0 / n),
                             jac=lambda w: gram @ w + linear, bounds=[(0, 1)] * n,
                             method="SLSQP", options={"ftol": 1e-14},
                             constraints={"type": "eq", "fun": lambda w: w.sum() - 1})
  return result.x


def _update(method, state, grads, counts=None):
  losses = np.ones(len(grads), np.float32)
  update = jax.jit(method.update, compiler_options=FULL_OPTIMIZATION)
  w, state = update(state, weighting.make_inputs(losses, counts, grads=grads))
  return np.asarray(w), state


def test_is_a_gram_method_allowed_on_representation_gradients():
  method = weighting.get("sdmgrad")
  assert (method.needs, method.allows_rep) == ("gram", True)


def _clipped(weights, jacobian, max_norm=1.0):
  """torch's clip_grad_norm_ on the update weights^T J, as weights."""
  norm = np.linalg.norm(np.asarray(weights, np.float64) @ np.asarray(jacobian, np.float64))
  return weights * min(1.0, max_norm / (norm + 1e-6))


def test_the_paper_weights_follow_the_official_inner_loop_and_mix_in_the_mean():
  method = weighting.get("sdmgrad", **PAPER)
  w, state = _update(method, method.init(3), J)
  inner = _official_inner_loop(J @ J.T, np.full(3, 1 / 3))
  np.testing.assert_allclose(state.weights, inner, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(w, (inner + 0.3 / 3) / 1.3, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_by_default_the_update_is_t_times_d_clipped_to_norm_1_as_the_official_code(scale):
  # Official: overwrite_grad multiplies d by n_tasks, then clip_grad_norm_(shared, max_norm=1).
  # A gentle inner loop (the default lr 10 amplifies rounding differences between compiles).
  grads, inner = scale * J, {"lr": 0.1, "momentum": 0.0}
  make = lambda **kwargs: weighting.get("sdmgrad", **inner, **kwargs)
  paper, _ = _update(make(**PAPER), make().init(3), grads)
  for kwargs, expected in [({}, _clipped(3 * paper, grads)),
                           ({"max_norm": 0.5}, _clipped(3 * paper, grads, 0.5)),
                           ({"max_norm": 0.0}, 3 * paper),
                           ({"scale_by_tasks": False}, _clipped(paper, grads))]:
    w, _ = _update(make(**kwargs), make().init(3), grads)
    np.testing.assert_allclose(w, expected, rtol=1e-5, err_msg=str(kwargs))
  norm = np.linalg.norm(_update(make(), make().init(3), grads)[0] @ grads)
  assert norm < 0.1 if scale == 0.01 else np.isclose(norm, 1.0, rtol=1e-5)  # clipped from 1 on


def test_the_next_update_starts_from_the_previous_w():
  method = weighting.get("sdmgrad", niter=3)
  _, state = _update(method, method.init(3), J)
  _, state2 = _update(method, state, J * 0.5)
  inner = _official_inner_loop(J @ J.T, np.full(3, 1 / 3), niter=3)
  inner = _official_inner_loop(J @ J.T / 4, inner, niter=3)
  np.testing.assert_allclose(state2.weights, inner, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("lamda", [0.0, 0.3, 2.0])
def test_with_small_steps_w_reaches_the_regularised_min_norm_point(lamda):
  method = weighting.get("sdmgrad", lamda=lamda, niter=3000, lr=0.05, momentum=0.0)
  _, state = _update(method, method.init(3), J)
  gram = J @ J.T / np.mean(np.sqrt(np.diag(J @ J.T) + 1e-4))**2
  np.testing.assert_allclose(state.weights, _regularised_optimum(gram, lamda), atol=1e-4)


def test_a_large_lamda_gives_the_mean_gradient():
  w, _ = _update(weighting.get("sdmgrad", lamda=1e6, **PAPER), weighting.get("sdmgrad").init(3),
                 J)
  np.testing.assert_allclose(w, np.full(3, 1 / 3), atol=1e-5)


def test_the_paper_weights_nearly_do_not_depend_on_the_gradients_scale():
  method = weighting.get("sdmgrad", **PAPER)
  w, _ = _update(method, method.init(3), J)
  w_scaled, _ = _update(method, method.init(3), J * 30.0)
  np.testing.assert_allclose(w_scaled, w, atol=2e-3)  # up to the 1e-4 in s = mean sqrt(G_ii + 1e-4)


def test_a_task_without_labels_gets_weight_zero_and_keeps_its_w():
  method = weighting.get("sdmgrad", **PAPER)
  state = method.init(3)._replace(weights=np.array([0.2, 0.5, 0.3], np.float32))
  grads = J.copy()
  grads[1] = 0.0
  w, after = _update(method, state, grads, counts=[4, 0, 4])
  assert np.isfinite(w).all() and w[1] == 0.0
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  assert np.asarray(after.weights)[1] == np.float32(0.5)
  pair = grads[[0, 2]]
  inner = _official_inner_loop(pair @ pair.T, np.array([0.4, 0.6]))
  np.testing.assert_allclose(np.asarray(after.weights)[[0, 2]], 0.5 * inner, rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(w[[0, 2]], (inner + 0.3 / 2) / 1.3, rtol=1e-4, atol=1e-6)
  # By default the update is scaled by the number of labelled tasks, 2, then clipped.
  w, _ = _update(weighting.get("sdmgrad"), state, grads, counts=[4, 0, 4])
  assert w[1] == 0.0
  np.testing.assert_allclose(w[[0, 2]], _clipped(2 * (inner + 0.3 / 2) / 1.3, pair), rtol=1e-4,
                             atol=1e-6)


@pytest.mark.parametrize("grads", [
    [[1.0, 2.0], [0.0, 0.0]],    # a zero gradient
    [[1.0, 2.0], [2.0, 4.0]],    # parallel
    [[1.0, 2.0], [-1.0, -2.0]],  # exactly opposite
    [[0.0, 0.0], [0.0, 0.0]],    # all zero
])
def test_degenerate_gradients_give_finite_weights_and_a_bounded_update(grads):
  grads = np.asarray(grads, np.float32)
  method = weighting.get("sdmgrad", **PAPER)
  w, state = _update(method, method.init(2), grads)
  assert np.isfinite(w).all() and (w >= 0).all()
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.sum(state.weights), 1.0, rtol=1e-6)
  method = weighting.get("sdmgrad")
  w, _ = _update(method, method.init(2), grads)
  assert np.isfinite(w).all() and (w >= 0).all()
  assert np.linalg.norm(w @ grads) <= 1.0 + 1e-5


@pytest.mark.parametrize("kwargs", [{"lamda": -1.0}, {"niter": 0}, {"lr": 0.0},
                                    {"momentum": 1.0}, {"max_norm": -1.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="sdmgrad"):
    weighting.get("sdmgrad", **kwargs)
