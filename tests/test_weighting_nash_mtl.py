"""Nash-MTL (Navon et al. 2022): weights solving the bargaining condition G alpha = 1 / alpha."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares

from mtl_jax import weighting

TOL = 1e-4  # checked below; the solver stops at 1e-5 on the same scale-free residual




@functools.lru_cache(maxsize=None)
def _method(**kwargs):
  """The method and its jitted update, built once per hyper-parameters (compiles are slow)."""
  method = weighting.get("nash_mtl", **kwargs)
  return method, jax.jit(method.update)


def _run(jacobians, counts=None, **kwargs):
  """Weights and states of consecutive steps on the given per-task gradient matrices."""
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


def _gram(jacobian):
  return np.asarray(jacobian, np.float64) @ np.asarray(jacobian, np.float64).T


def _update_norm(weights, jacobian):
  return np.linalg.norm(weights @ np.asarray(jacobian, np.float64))


JACOBIANS = {
    "two_conflicting": [[1.0, 0.0], [-0.5, 1.0]],
    "three_tasks": [[1.0, 0.2, 0.0], [-0.9, 0.5, 0.1], [0.1, -1.0, 0.3]],
    "seeded_5x8": np.random.default_rng(2).normal(size=(5, 8)),
    "different_scales": [[30.0, 0.0, 0.0], [-0.05, 0.02, 0.0], [0.0, -3.0, 1.0]],
}


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_weights_satisfy_the_bargaining_condition(name):
  # Unclipped weights solve alpha_i (G alpha)_i = 1 on the raw G, as the official code's (which
  # normalises G by ||G||_F for its solver only).
  gram = _gram(JACOBIANS[name])
  alpha = _weights(JACOBIANS[name], max_norm=0.0, reg=0.0)
  assert (alpha > 0).all()
  assert np.abs(alpha * (gram @ alpha) - 1.0).max() < TOL
  # The default ridge 1e-6 (on the cosine matrix) moves each equation by reg alpha_i^2 G_ii.
  alpha = _weights(JACOBIANS[name], max_norm=0.0)
  shift = 1e-6 * alpha**2 * np.diag(gram)
  assert (np.abs(alpha * (gram @ alpha) - 1.0) < TOL + shift).all()


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_weights_match_a_float64_host_solve(name):
  gram = _gram(JACOBIANS[name])
  reference = least_squares(lambda a: gram @ a - 1 / a, np.ones(len(gram)), bounds=(0, np.inf),
                            xtol=1e-15, ftol=1e-15, gtol=1e-15).x
  np.testing.assert_allclose(_weights(JACOBIANS[name], max_norm=0.0), reference, rtol=1e-4)


def test_orthogonal_gradients_each_get_the_inverse_of_their_norm():
  # G diagonal: alpha_i = 1 / sqrt(G_ii), i.e. d = sum_i g_i / ||g_i||.
  jacobian = np.array([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
  np.testing.assert_allclose(_weights(jacobian, max_norm=0.0), 1 / np.array([3.0, 0.5, 1.0]),
                             rtol=1e-5)  # ridge 1e-6


@pytest.mark.parametrize("scale", [1e-8, 1e-2, 1e4, 1e8])
def test_scaling_g_by_c_scales_the_weights_by_one_over_sqrt_c(scale):
  # J -> sqrt(c) J, G -> c G: alpha -> alpha / sqrt(c) keeps alpha_i (G alpha)_i = 1, so the
  # update alpha^T J keeps its norm, sqrt(T) (sum_i alpha_i (G alpha)_i = T).
  jacobian = np.asarray(JACOBIANS["three_tasks"], np.float64)
  alpha = _weights(jacobian, max_norm=0.0)
  scaled = _weights(np.sqrt(scale) * jacobian, max_norm=0.0)
  np.testing.assert_allclose(scaled, alpha / np.sqrt(scale), rtol=1e-4)
  np.testing.assert_allclose(_update_norm(scaled, np.sqrt(scale) * jacobian), np.sqrt(3),
                             rtol=1e-4)


def test_two_orthogonal_gradients_of_norm_0_2_give_an_update_of_norm_1():
  # Issue 13's example: alpha = (5, 5), ||d|| = sqrt(2), clipped to 1 as by the official code,
  # LibMTL and torchjd (weights solved for G / ||G||_F alone gave 0.336).
  jacobian = np.array([[0.2, 0.0], [0.0, 0.2]])
  np.testing.assert_allclose(_weights(jacobian, max_norm=0.0), [5.0, 5.0], rtol=1e-5)
  weights = _weights(jacobian)
  np.testing.assert_allclose(weights, 5.0 / (np.sqrt(2) + 1e-6), rtol=1e-5)
  np.testing.assert_allclose(_update_norm(weights, jacobian), 1.0, rtol=1e-5)


def test_max_norm_clips_the_update_like_clip_grad_norm():
  jacobian = np.asarray(JACOBIANS["three_tasks"], np.float64)
  alpha = _weights(jacobian, max_norm=0.0)
  norm = _update_norm(alpha, jacobian)
  assert norm > 1.0
  np.testing.assert_allclose(_weights(jacobian), alpha / (norm + 1e-6), rtol=1e-5)
  np.testing.assert_allclose(_weights(jacobian, max_norm=0.5), 0.5 * alpha / (norm + 1e-6),
                             rtol=1e-5)
  np.testing.assert_allclose(_weights(jacobian, max_norm=10 * norm), alpha, rtol=1e-6)


def test_weights_are_reused_between_updates_and_the_state_keeps_the_normalised_solution():
  first, second = np.asarray(JACOBIANS["three_tasks"]), np.asarray(JACOBIANS["seeded_5x8"])[:3]
  assert not np.isclose(np.linalg.norm(_gram(first)), np.linalg.norm(_gram(second)), rtol=0.1)
  weights, states = _run([first, second, second, second], max_norm=0.0, update_weights_every=3)
  alpha_first = _weights(first, max_norm=0.0)
  for step in (0, 1, 2):  # steps 1 and 2 reuse step 0's weights, though G and ||G||_F changed
    np.testing.assert_allclose(weights[step], alpha_first, rtol=1e-6)
  np.testing.assert_allclose(weights[3], _weights(second, max_norm=0.0), rtol=1e-4)
  # The state keeps the solution for G / ||G||_F, the warm start of the next solve.
  np.testing.assert_allclose(states[0].alpha, weights[0] * np.sqrt(np.linalg.norm(_gram(first))),
                             rtol=1e-5)
  np.testing.assert_allclose(states[3].alpha,
                             weights[3] * np.sqrt(np.linalg.norm(_gram(second))), rtol=1e-5)


def test_reused_weights_are_clipped_on_the_current_gradients():
  small, large = np.diag([0.2, 0.2]), np.diag([2.0, 2.0])
  weights, _ = _run([small, large], update_weights_every=2)
  raw = _weights(small, max_norm=0.0)  # (5, 5), reused at step 1 where ||raw^T J|| = 10 sqrt(2)
  np.testing.assert_allclose(weights[1], raw / (_update_norm(raw, large) + 1e-6), rtol=1e-5)
  np.testing.assert_allclose(_update_norm(weights[1], large), 1.0, rtol=1e-5)


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


def test_a_zero_gradient_gets_weight_zero_and_leaves_the_other_tasks_bargain_unchanged():
  jacobian = np.array([[1.0, 2.0], [0.0, 0.0], [-1.0, 0.5]])
  weights = _weights(jacobian, max_norm=0.0)
  assert weights[1] == 0.0
  np.testing.assert_allclose(weights[[0, 2]], _weights(jacobian[[0, 2]], max_norm=0.0),
                             rtol=1e-4)


def test_parallel_gradients_solve_the_condition_and_opposite_ones_cancel():
  # G = [[5, 10], [10, 20]]: with s = 5 a1 + 10 a2, a1 = 1/s, a2 = 1/(2s), so s^2 = 10.
  parallel = np.array([[1.0, 2.0], [2.0, 4.0]])
  np.testing.assert_allclose(_weights(parallel, max_norm=0.0),
                             np.array([1.0, 0.5]) / np.sqrt(10.0), rtol=1e-4)
  opposite = np.array([[1.0, 2.0], [-1.0, -2.0]])
  assert np.linalg.norm(_weights(opposite) @ opposite) < 1e-3


def test_a_task_without_labels_gets_weight_zero_and_keeps_its_alpha():
  jacobian = np.array([[1.0, 0.2, 0.0], [0.0, 0.0, 0.0], [-0.9, 0.5, 0.1]])
  weights, states = _run([jacobian], counts=[4, 0, 4], max_norm=0.0)
  assert weights[0][1] == 0.0 and np.isfinite(weights[0]).all()
  assert states[0].alpha[1] == 1.0  # the initial alpha
  np.testing.assert_allclose(weights[0][[0, 2]], _weights(jacobian[[0, 2]], max_norm=0.0),
                             rtol=1e-4)


def test_all_zero_gradients_keep_the_previous_alpha():
  jacobian = np.asarray(JACOBIANS["three_tasks"])
  weights, states = _run([jacobian, np.zeros_like(jacobian)], max_norm=0.0)
  np.testing.assert_allclose(weights[1], weights[0])
  np.testing.assert_allclose(states[1].alpha, states[0].alpha)


def test_huge_and_tiny_gradients_give_finite_clipped_updates():
  jacobian = np.asarray(JACOBIANS["three_tasks"], np.float64)
  for scale in (1e-12, 1e12):
    weights = _weights(scale * jacobian)
    assert np.isfinite(weights).all()
    assert np.linalg.norm(weights @ (scale * jacobian)) <= 1.0 + 1e-5


def test_reads_only_the_gram_matrix_of_parameter_gradients():
  method = weighting.get("nash_mtl")
  assert method.needs == "gram" and not method.allows_rep


@pytest.mark.parametrize("kwargs", [{"max_norm": -1.0}, {"update_weights_every": 0},
                                    {"tol": 0.0}, {"iterations": 0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="nash_mtl"):
    weighting.get("nash_mtl", **kwargs)
