"""MGDA (Sener & Koltun, NeurIPS 2018): the minimum-norm point of the convex hull of the gradients."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from mtl_jax import weighting
from mtl_jax.weighting import solvers




@functools.cache
def _method(**kwargs):
  """The method and its jitted update, built once per hyper-parameters (compiles are slow)."""
  method = weighting.get("mgda", **kwargs)
  return method, jax.jit(method.update)


def _weights(jacobian, losses=None, counts=None, gram=None, **kwargs):
  """MGDA's weights for the rows of `jacobian`, or for a Gram matrix `gram` (jacobian None)."""
  grads = None if jacobian is None else jnp.asarray(np.asarray(jacobian, np.float32))
  num_tasks = len(gram if jacobian is None else jacobian)
  method, update = _method(**kwargs)
  losses = np.ones(num_tasks) if losses is None else losses
  w, _ = update(method.init(num_tasks),
                weighting.make_inputs(losses, counts, gram=gram, grads=grads))
  return np.asarray(w, np.float64)


def _brute_force_min_norm(jacobian):
  """The minimum-norm point of conv{rows of J}, by SLSQP over the simplex (float64)."""
  jacobian = np.asarray(jacobian, np.float64)
  gram, num_tasks = jacobian @ jacobian.T, len(jacobian)
  result = optimize.minimize(lambda a: a @ gram @ a, np.full(num_tasks, 1 / num_tasks),
                             jac=lambda a: 2 * gram @ a, bounds=[(0, 1)] * num_tasks,
                             constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1}],
                             method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
  return result.x @ jacobian


def _exact_min_norm_weights(gram):
  """argmin of a^T G a over the simplex in float64, from the KKT conditions on every support S:
  G_SS a_S = lambda 1, sum a_S = 1, a_S >= 0 and (G a)_r >= lambda = a^T G a off S."""
  gram = np.asarray(gram, np.float64)
  num_tasks, best = len(gram), None
  for size in range(1, num_tasks + 1):
    for support in map(list, itertools.combinations(range(num_tasks), size)):
      kkt = np.block([[gram[np.ix_(support, support)], -np.ones((size, 1))],
                      [np.ones((1, size)), np.zeros((1, 1))]])
      solution = np.linalg.lstsq(kkt, np.eye(size + 1)[-1], rcond=None)[0]
      a = np.zeros(num_tasks)
      a[support] = solution[:size]
      value = a @ gram @ a
      feasible = (a >= 0).all() and (gram @ a >= value - 1e-12 * np.abs(gram).max()).all()
      if feasible and (best is None or value < best @ gram @ best):
        best = a
  return best


def _relative_direction_error(weights, reference, gram):
  """||d - d*|| / ||d*|| with d = J^T w, from G alone (float64)."""
  gram, error = np.asarray(gram, np.float64), np.asarray(weights, np.float64) - reference
  return np.sqrt(max(error @ gram @ error, 0.0) / (reference @ gram @ reference))


def _gram(norms, cosines):
  return (np.asarray(cosines) * np.outer(norms, norms)).astype(np.float32)


NORMS_SPANNING_FOUR_DECADES = (0.045, 4.5, 464.0)


@pytest.mark.parametrize("cosines", [
    [[1.0, -0.3, -0.2], [-0.3, 1.0, -0.5], [-0.2, -0.5, 1.0]],
    [[1.0, -0.5, -0.9], [-0.5, 1.0, 0.3], [-0.9, 0.3, 1.0]],
], ids=["pairwise_conflicts", "one_task_against_two"])
def test_a_min_norm_point_small_against_the_largest_gradient_is_found_to_1e_4(cosines):
  # ||d*|| (0.039 and 0.016) is below 1e-4 ||g_3||: a stop relative to max_t ||g_t||^2 ended a
  # few steps in, with d off by 0.2% and 66%; the stop relative to ||d||^2 does not.
  gram = _gram(NORMS_SPANNING_FOUR_DECADES, cosines)
  reference = _exact_min_norm_weights(gram)
  assert (reference > 0).all()  # every task in the support: the problem is not trivial
  w = _weights(None, gram=gram)
  assert _relative_direction_error(w, reference, gram) < 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_eight_tasks_with_loss_normalisation_match_a_float64_solve_to_1e_4(seed):
  # Losses spread over orders of magnitude make the normalised gradients' norms spread too
  # (the stop relative to max_t ||g_t||^2 left d off by 0.3% to 53% on these seeds).
  rng = np.random.default_rng(seed)
  jacobian = rng.normal(size=(8, 20))
  losses = np.exp(2.0 * rng.normal(size=8))
  gram = jacobian @ jacobian.T
  normalized = gram / np.outer(losses, losses)
  w = _weights(None, losses, gram=gram.astype(np.float32), normalization="loss")
  reference = _exact_min_norm_weights(normalized)
  assert _relative_direction_error(w, reference, normalized) < 1e-4


@pytest.mark.parametrize("num_tasks", [2, 3, 4, 6])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_direction_is_the_brute_force_min_norm_point_of_the_convex_hull(num_tasks, seed):
  jacobian = np.random.default_rng(seed).normal(size=(num_tasks, 5))
  w = _weights(jacobian)
  assert (w >= 0).all() and np.isclose(w.sum(), 1.0, atol=1e-6)
  expected = _brute_force_min_norm(jacobian)
  np.testing.assert_allclose(w @ jacobian, expected, atol=2e-3 * np.abs(jacobian).max())


def test_a_worked_example_min_over_a_of_4a2_plus_1_minus_a_squared():
  # g1 = (2, 0), g2 = (0, 1): ||a g1 + (1 - a) g2||^2 = 4a^2 + (1 - a)^2, minimal at a = 1/5.
  np.testing.assert_allclose(_weights([[2.0, 0.0], [0.0, 1.0]]), [0.2, 0.8], atol=1e-6)


def test_the_direction_does_not_conflict_with_any_task():
  # Optimality of the min-norm point d: <d, g_t> >= ||d||^2 for every t.
  jacobian = np.random.default_rng(3).normal(size=(5, 4))
  d = _weights(jacobian) @ jacobian
  assert (jacobian @ d >= d @ d - 1e-4).all()


def test_with_one_task_it_is_that_tasks_gradient():
  np.testing.assert_allclose(_weights([[3.0, -1.0, 2.0]]), [1.0])


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_the_weights_do_not_depend_on_the_gradient_scale(scale):
  jacobian = np.random.default_rng(4).normal(size=(4, 6))
  np.testing.assert_allclose(_weights(scale * jacobian), _weights(jacobian), atol=1e-4)


@pytest.mark.parametrize("jacobian, direction", [
    ([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]], [0.0, 0.0]),   # a zero gradient is the min-norm point
    ([[1.0, 1.0], [2.0, 2.0]], [1.0, 1.0]),               # parallel: the shorter one
    ([[1.0, 1.0], [1.0, 1.0]], [1.0, 1.0]),               # identical
    ([[1.0, -2.0], [-1.0, 2.0]], [0.0, 0.0]),             # exactly opposite: 0 is in the hull
])
def test_degenerate_gradients_give_finite_weights_and_the_min_norm_point(jacobian, direction):
  w = _weights(jacobian)
  assert np.isfinite(w).all() and np.isclose(w.sum(), 1.0, atol=1e-6)
  np.testing.assert_allclose(w @ np.asarray(jacobian), direction, atol=1e-6)


def test_all_zero_gradients_give_finite_weights():
  w = _weights(np.zeros((3, 4)))
  assert np.isfinite(w).all() and np.isclose(w.sum(), 1.0)


def test_a_task_without_labels_gets_weight_zero_and_is_left_out_of_the_hull():
  # Task 1's zero row would otherwise be the min-norm point (weight 1, direction 0).
  jacobian = [[2.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
  w = _weights(jacobian, losses=[1.0, 0.0, 1.0], counts=[4, 0, 4])
  np.testing.assert_allclose(w, [0.2, 0.0, 0.8], atol=1e-6)
  for normalization in ("l2", "loss", "loss+"):
    w = _weights(jacobian, losses=[1.0, 0.0, 1.0], counts=[4, 0, 4], normalization=normalization)
    assert np.isfinite(w).all() and w[1] == 0.0


def test_no_labelled_task_gives_all_zero_weights():
  np.testing.assert_array_equal(_weights([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], [0, 0]), [0, 0])


@pytest.mark.parametrize("normalization, normalizers", [
    ("none", lambda norms, losses: np.ones_like(losses)),
    ("l2", lambda norms, losses: norms),
    ("loss", lambda norms, losses: losses),
    ("loss+", lambda norms, losses: losses * norms),
])
def test_normalisations_solve_on_g_t_over_n_t_and_weight_the_raw_losses(normalization,
                                                                         normalizers):
  # Official code: alpha = min-norm weights of {g_t / n_t}; the update is sum_t alpha_t g_t.
  jacobian = np.random.default_rng(5).normal(size=(3, 4)) * np.array([[1.0], [5.0], [0.2]])
  losses = np.array([0.5, 2.0, 1.5])
  n = normalizers(np.linalg.norm(jacobian, axis=1), losses)
  alpha = _weights(jacobian, losses, normalization=normalization)
  np.testing.assert_allclose(alpha @ (jacobian / n[:, None]),
                             _brute_force_min_norm(jacobian / n[:, None]), atol=1e-3)


def test_l2_normalisation_of_a_worked_example():
  # Unit gradients (1, 0) and (0, 1): alpha = (1/2, 1/2), applied to the raw gradients.
  np.testing.assert_allclose(_weights([[2.0, 0.0], [0.0, 1.0]], normalization="l2"), [0.5, 0.5],
                             atol=1e-6)


def test_plain_frank_wolfe_reaches_the_same_point_within_its_gap():
  jacobian = np.random.default_rng(6).normal(size=(4, 5))
  gram = jnp.asarray(jacobian @ jacobian.T, jnp.float32)
  plain = solvers.min_norm_solve(gram, away_steps=False, iterations=2000, tol=1e-7)
  away = solvers.min_norm_solve(gram)
  assert int(away.iterations) < int(plain.iterations)
  np.testing.assert_allclose(np.asarray(plain.weights) @ jacobian,
                             np.asarray(away.weights) @ jacobian, atol=5e-3)


def test_jit_equals_eager_with_loss_plus_normalization():
  """The default (no normalization) is checked with every method in test_weighting_properties.py."""
  method = weighting.get("mgda", normalization="loss+")
  jacobian = jnp.asarray(np.random.default_rng(7).normal(size=(4, 6)), jnp.float32)
  inputs = weighting.make_inputs([0.3, 1.0, 2.0, 0.7], [3, 0, 2, 5], grads=jacobian)
  state = method.init(4)
  (w_eager, s_eager), (w_jit, s_jit) = method.update(state, inputs), jax.jit(method.update)(
      state, inputs)
  np.testing.assert_allclose(w_jit, w_eager, atol=1e-6)
  np.testing.assert_allclose(s_jit.weights, s_eager.weights, atol=1e-6)


def test_mgda_reads_only_the_gram_matrix_and_allows_the_representation_mode():
  method = weighting.get("mgda")
  assert method.needs == "gram" and method.allows_rep


@pytest.mark.parametrize("kwargs", [{"normalization": "l1"}, {"iterations": 0}, {"eps": 0.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="mgda"):
    weighting.get("mgda", **kwargs)
