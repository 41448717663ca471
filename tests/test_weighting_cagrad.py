"""CAGrad (Liu et al., NeurIPS 2021): the best worst-case improvement near the mean gradient."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from mtl_jax import weighting




@functools.cache
def _method(**kwargs):
  """The method and its jitted update, built once per hyper-parameters (compiles are slow)."""
  method = weighting.get("cagrad", **kwargs)
  return method, jax.jit(method.update)


def _weights(jacobian, counts=None, **kwargs):
  jacobian = jnp.asarray(jacobian, jnp.float32)
  method, update = _method(**kwargs)
  inputs = weighting.make_inputs(np.ones(len(jacobian)), counts, grads=jacobian)
  w, state = update(method.init(len(jacobian)), inputs)
  return np.asarray(w, np.float64), state


def _brute_force_direction(jacobian, c, starts=1, ftol=1e-14):
  """d = g_0 + c0 g_w / ||g_w|| with w from SLSQP on the dual (float64, the official solver),
  the best of `starts` runs (from 1/T, then from the vertices)."""
  jacobian = np.asarray(jacobian, np.float64)
  gram, num_tasks = jacobian @ jacobian.T, len(jacobian)
  b = np.full(num_tasks, 1 / num_tasks)
  c0 = c * np.sqrt(b @ gram @ b)
  runs = [optimize.minimize(lambda w: w @ gram @ b + c0 * np.sqrt(max(w @ gram @ w, 0.0)), x0,
                            bounds=[(0, 1)] * num_tasks,
                            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                            method="SLSQP", options={"ftol": ftol, "maxiter": 3000})
          for x0 in [b, *np.eye(num_tasks)][:starts]]
  g_w = min(runs, key=lambda r: r.fun).x @ jacobian
  return b @ jacobian + c0 * g_w / np.linalg.norm(g_w)


@pytest.mark.parametrize("rescale", [0, 1, 2])
def test_c_zero_gives_the_mean_gradient(rescale):
  jacobian = np.random.default_rng(0).normal(size=(4, 5))
  w, _ = _weights(jacobian, c=0.0, rescale=rescale)
  np.testing.assert_allclose(w, np.full(4, 0.25), atol=1e-7)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_direction_equals_the_dual_solved_by_slsqp(num_tasks, seed):
  rng = np.random.default_rng(seed)
  jacobian = rng.normal(size=(num_tasks, 6)) + 0.5 * rng.normal(size=(1, 6))
  w, _ = _weights(jacobian, c=0.5, rescale=0)
  np.testing.assert_allclose(w @ jacobian, _brute_force_direction(jacobian, 0.5), atol=2e-3)


def test_the_direction_solves_the_primal_max_min_improvement_in_the_ball():
  # Eq. 2: d maximises min_i <g_i, d> over ||d - g_0|| <= c ||g_0||.
  rng = np.random.default_rng(2)
  jacobian = rng.normal(size=(3, 4)) + np.array([1.0, 0.0, 0.0, 0.0])
  c = 0.5
  w, _ = _weights(jacobian, c=c, rescale=0)
  d, g_0 = w @ jacobian, jacobian.mean(0)
  radius = c * np.linalg.norm(g_0)
  np.testing.assert_allclose(np.linalg.norm(d - g_0), radius, rtol=1e-4)
  others = rng.normal(size=(2000, 4))
  others = g_0 + radius * others / np.linalg.norm(others, axis=1, keepdims=True) * (
      rng.uniform(size=(2000, 1)) ** 0.25)
  assert (jacobian @ d).min() >= (others @ jacobian.T).min(1).max() - 1e-4


def test_rescale_divides_the_direction_by_one_plus_c_squared_or_one_plus_c():
  jacobian = np.random.default_rng(3).normal(size=(3, 4))
  plain, _ = _weights(jacobian, c=0.4, rescale=0)
  np.testing.assert_allclose(_weights(jacobian, c=0.4, rescale=1)[0], plain / 1.16, rtol=1e-5)
  np.testing.assert_allclose(_weights(jacobian, c=0.4, rescale=2)[0], plain / 1.4, rtol=1e-5)


@pytest.mark.parametrize("jacobian, direction", [
    ([[1.0, -2.0], [-1.0, 2.0]], [0.0, 0.0]),   # exactly opposite: g_0 = 0, so d = 0
    ([[1.0, 1.0], [1.0, 1.0]], [1.5, 1.5]),     # identical: d = (1 + c) g (rescale 0)
])
def test_degenerate_gradients(jacobian, direction):
  w, state = _weights(jacobian, rescale=0)
  assert np.isfinite(w).all() and np.isfinite(np.asarray(state.dual_weights)).all()
  np.testing.assert_allclose(w @ np.asarray(jacobian), direction, atol=1e-6)


@pytest.mark.parametrize("jacobian", [[[1.0, 2.0], [0.0, 0.0]], [[1.0, 1.0], [3.0, 3.0]],
                                      np.zeros((3, 2))])
def test_a_zero_or_parallel_gradient_gives_finite_weights(jacobian):
  w, _ = _weights(jacobian)
  assert np.isfinite(w).all()


def test_a_task_without_labels_gets_weight_zero_and_leaves_the_mean():
  jacobian = [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
  w, _ = _weights(jacobian, counts=[2, 0, 2], c=0.0)
  np.testing.assert_allclose(w, [0.5, 0.0, 0.5], atol=1e-7)
  w, state = _weights(jacobian, counts=[2, 0, 2])
  assert np.isfinite(w).all() and w[1] == 0.0 and state.dual_weights[1] == 0.0
  np.testing.assert_array_equal(_weights(jacobian, counts=[0, 0, 0])[0], [0.0, 0.0, 0.0])


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_the_weights_do_not_depend_on_the_gradient_scale(scale):
  jacobian = np.random.default_rng(4).normal(size=(4, 5))
  np.testing.assert_allclose(_weights(scale * jacobian)[0], _weights(jacobian)[0], atol=1e-4)


def test_cagrad_reads_only_the_gram_matrix():
  method = weighting.get("cagrad")
  assert method.needs == "gram" and not method.allows_rep


@pytest.mark.parametrize("kwargs", [{"c": -0.1}, {"rescale": 3}, {"iterations": 0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="cagrad"):
    weighting.get("cagrad", **kwargs)


def _spread_jacobian(seed, num_tasks):
  """Random directions, rows 0 and 1 nearly opposite, norms from 0.045 to 464 in random order."""
  rng = np.random.default_rng(seed)
  jacobian = rng.normal(size=(num_tasks, 20))
  jacobian[1] = -jacobian[0] + 0.01 * rng.normal(size=20)
  norms = np.geomspace(0.045, 464.0, num_tasks)[rng.permutation(num_tasks)]
  return jacobian / np.linalg.norm(jacobian, axis=1, keepdims=True) * norms[:, None]


@pytest.mark.parametrize("seed, num_tasks", [(1, 4), (5, 8)])
def test_gradient_norms_spanning_four_decades_give_the_slsqp_direction_to_3e_4(seed, num_tasks):
  # ||g_w|| at the solution is ~1e-4 of the largest gradient: the former stop, relative to
  # max_t ||g_t||^2, ended a few steps in with d off by 18% and 0.063%.
  jacobian = _spread_jacobian(seed, num_tasks)
  method, update = _method(c=0.5, rescale=0)
  inputs = weighting.make_inputs(np.ones(num_tasks), gram=jacobian @ jacobian.T)  # G in float64
  w = np.asarray(update(method.init(num_tasks), inputs)[0], np.float64)
  # The reference on J / max||g_t||: the direction scales with J (the weights are scale-free).
  scale = np.linalg.norm(jacobian, axis=1).max()
  reference = scale * _brute_force_direction(jacobian / scale, 0.5, num_tasks + 1, 1e-16)
  error = np.linalg.norm(w @ jacobian - reference) / np.linalg.norm(reference)
  assert error < 3e-4  # the SLSQP reference itself is good to ~1e-4
