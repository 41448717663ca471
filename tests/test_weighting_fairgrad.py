"""FairGrad (Ban & Ji 2024): weights solving the alpha-fair condition (G w)_i = w_i^(-1/alpha)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares

from mtl_jax import weighting

from compile_options import FULL_OPTIMIZATION

TOL = 1e-4  # checked below; the solver stops at 1e-5 on the same scale-free residual


@functools.lru_cache(maxsize=None)
def _method(**kwargs):
  """The method and its jitted update, built once per hyper-parameters (compiles are slow)."""
  method = weighting.get("fairgrad", **kwargs)
  return method, jax.jit(method.update, compiler_options=FULL_OPTIMIZATION)


def _run(jacobians, counts=None, **kwargs):
  method, update = _method(**kwargs)
  state = method.init(len(jacobians[0]))
  weights, states = [], []
  for step, jacobian in enumerate(jacobians):
    inputs = weighting.make_inputs(np.ones(len(jacobian)), counts, step=step,
                                   grads=jnp.asarray(jacobian, jnp.float32))
    w, state = update(state, inputs)
    weights.append(np.asarray(w, np.float64))
    states.append(state)
  return weights, states


def _weights(jacobian, counts=None, **kwargs):
  return _run([jacobian], counts, **kwargs)[0][0]


def _raw_weights(jacobian, alpha, **kwargs):
  """The solution w of the paper's equation: the unclipped weights are T w."""
  return _weights(jacobian, alpha=alpha, max_norm=0.0, **kwargs) / len(jacobian)


JACOBIANS = {
    "two_conflicting": [[1.0, 0.0], [-0.5, 1.0]],
    "three_tasks": [[1.0, 0.2, 0.0], [-0.9, 0.5, 0.1], [0.1, -1.0, 0.3]],
    "seeded_5x8": np.random.default_rng(4).normal(size=(5, 8)),
    "different_scales": [[30.0, 0.0, 0.0], [-0.05, 0.02, 0.0], [0.0, -3.0, 1.0]],
}


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_weights_satisfy_the_alpha_fair_equation(name, alpha):
  if name == "different_scales" and alpha == 0.5:
    pytest.skip("beyond float32: (G w)_1 cancels to 1e-5 of its terms and is then squared")
  jacobian = np.asarray(JACOBIANS[name], np.float64)
  gram = jacobian @ jacobian.T  # the raw G, as the official code
  w = _raw_weights(jacobian, alpha, reg=0.0)
  assert (w > 0).all()
  assert np.abs(w ** (1 / alpha) * (gram @ w) - 1.0).max() < TOL


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_weights_match_the_official_host_solve(name):
  # The official code: scipy's least_squares on G x - x^(-1/alpha) from x = 1/T, alpha = 2.
  jacobian = np.asarray(JACOBIANS[name], np.float64)
  gram = jacobian @ jacobian.T
  reference = least_squares(lambda x: gram @ x - (1 / x) ** 0.5, np.ones(len(gram)) / len(gram),
                            bounds=(0, np.inf), xtol=1e-15, ftol=1e-15, gtol=1e-15).x
  np.testing.assert_allclose(_raw_weights(jacobian, 2.0), reference, rtol=1e-4)


def test_alpha_one_is_nash_mtls_bargaining_solution():
  jacobian = np.asarray(JACOBIANS["three_tasks"], np.float64)
  nash = weighting.get("nash_mtl", max_norm=0.0)
  inputs = weighting.make_inputs(np.ones(3), grads=jnp.asarray(jacobian, jnp.float32))
  nash_alpha = np.asarray(jax.jit(nash.update)(nash.init(3), inputs)[0])
  # Both solve the condition on the raw G (Nash-MTL's solver sees G / ||G||_F, then rescales).
  np.testing.assert_allclose(_raw_weights(jacobian, 1.0), nash_alpha, rtol=1e-4)


def test_orthogonal_gradients_worked_example():
  # G = diag(n_i^2): n_i^2 w_i = w_i^(-1/alpha), so w_i = n_i^(-2 alpha / (1 + alpha)).
  norms = np.array([3.0, 0.5, 1.0])
  np.testing.assert_allclose(_raw_weights(np.diag(norms), 2.0), norms ** (-4 / 3), rtol=1e-4)


def test_scaling_the_gradients_scales_the_weights_as_the_equation_says():
  # G -> s^2 G gives w -> s^(-2 alpha / (1 + alpha)) w; at tiny and huge s without overflow.
  jacobian = np.asarray(JACOBIANS["three_tasks"], np.float64)
  base = _raw_weights(jacobian, 2.0)
  for scale in (1e-6, 1e6):
    np.testing.assert_allclose(_raw_weights(scale * jacobian, 2.0),
                               base * scale ** (-4 / 3), rtol=1e-4)


def test_max_norm_clips_the_update_of_t_times_w():
  jacobian = np.asarray(JACOBIANS["three_tasks"], np.float64)
  unclipped = _weights(jacobian, max_norm=0.0)
  norm = np.linalg.norm(unclipped @ jacobian)
  assert norm > 1.0
  np.testing.assert_allclose(_weights(jacobian), unclipped / (norm + 1e-6), rtol=1e-5)
  # ||d|| scales as s^((1 - alpha) / (1 + alpha)): tiny gradients blow the update up (clipped
  # to 1, without overflow), huge ones shrink it (left alone).
  tiny = _weights(1e-12 * jacobian)
  np.testing.assert_allclose(np.linalg.norm(tiny @ (1e-12 * jacobian)), 1.0, rtol=1e-4)
  huge = _weights(1e12 * jacobian)
  np.testing.assert_allclose(huge, _weights(1e12 * jacobian, max_norm=0.0), rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(huge @ (1e12 * jacobian)), norm * 1e-4, rtol=1e-4)


@pytest.mark.parametrize("jacobian", [
    [[1.0, 2.0], [0.0, 0.0], [-1.0, 0.5]],
    [[1.0, 2.0], [2.0, 4.0]],
    [[1.0, 2.0], [-1.0, -2.0]],
], ids=["zero", "parallel", "opposite"])
def test_degenerate_gradients_give_finite_weights_and_a_bounded_update(jacobian):
  jacobian = np.asarray(jacobian)
  weights = _weights(jacobian)
  assert np.isfinite(weights).all() and (weights >= 0).all()
  assert np.linalg.norm(weights @ jacobian) <= 1.0 + 1e-5


def test_a_zero_gradient_gets_weight_zero_and_the_others_solve_their_equation():
  jacobian = np.array([[1.0, 2.0], [0.0, 0.0], [-1.0, 0.5]])
  weights = _weights(jacobian, max_norm=0.0)
  assert weights[1] == 0.0
  np.testing.assert_allclose(weights[[0, 2]], _weights(jacobian[[0, 2]], max_norm=0.0),
                             rtol=1e-4)


def test_parallel_gradients_solve_the_equation_and_opposite_ones_cancel():
  parallel = np.array([[1.0, 2.0], [2.0, 4.0]])
  w = _raw_weights(parallel, 2.0)
  gram = parallel @ parallel.T
  assert np.abs(w ** 0.5 * (gram @ w) - 1.0).max() < 1e-3  # shifted by the 1e-6 ridge
  opposite = np.array([[1.0, 2.0], [-1.0, -2.0]])
  assert np.linalg.norm(_weights(opposite) @ opposite) < 1e-3


def test_a_task_without_labels_gets_weight_zero_and_keeps_its_warm_start():
  jacobian = np.array([[1.0, 0.2, 0.0], [0.0, 0.0, 0.0], [-0.9, 0.5, 0.1]])
  weights, states = _run([jacobian], counts=[4, 0, 4], max_norm=0.0)
  assert weights[0][1] == 0.0 and np.isfinite(weights[0]).all()
  assert states[0].normalized_weights[1] == pytest.approx(1 / 3)  # the initial 1/T
  np.testing.assert_allclose(weights[0][[0, 2]], _weights(jacobian[[0, 2]], max_norm=0.0),
                             rtol=1e-4)


def test_all_zero_gradients_give_weight_zero_and_keep_the_state():
  jacobian = np.asarray(JACOBIANS["three_tasks"])
  weights, states = _run([jacobian, np.zeros_like(jacobian)])
  np.testing.assert_array_equal(weights[1], 0.0)
  np.testing.assert_allclose(states[1].normalized_weights, states[0].normalized_weights)


def test_the_next_step_warm_starts_from_the_last_solution():
  jacobian = np.asarray(JACOBIANS["seeded_5x8"])
  weights, states = _run([jacobian, jacobian], max_norm=0.0)
  np.testing.assert_allclose(weights[1], weights[0], rtol=1e-5)
  np.testing.assert_allclose(states[1].normalized_weights, states[0].normalized_weights,
                             rtol=1e-5)


def test_reads_only_the_gram_matrix_of_parameter_gradients():
  method = weighting.get("fairgrad")
  assert method.needs == "gram" and not method.allows_rep


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"max_norm": -1.0}, {"tol": 0.0},
                                    {"reg": -1.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="fairgrad"):
    weighting.get("fairgrad", **kwargs)
