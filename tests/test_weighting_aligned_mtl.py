"""Aligned-MTL (Senushkin et al. 2023): the aligned gradient matrix has condition number 1."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import aligned_mtl




@functools.lru_cache(maxsize=None)
def _method(**kwargs):
  """The method and its jitted update, built once per hyper-parameters (compiles are slow)."""
  method = weighting.get("aligned_mtl", **kwargs)
  return method, jax.jit(method.update)


def _weights(jacobian, counts=None, **kwargs):
  jacobian = np.asarray(jacobian, np.float32)
  method, update = _method(**kwargs)
  inputs = weighting.make_inputs(np.ones(len(jacobian)), counts, grads=jnp.asarray(jacobian))
  weights, _ = update(method.init(len(jacobian)), inputs)
  return np.asarray(weights, np.float64)


def _official_weights(jacobian, scale_mode="min"):
  """The official ProcrustesSolver in float64: B = V diag(sqrt(scale / lambda)) V^T, w = B 1."""
  gram = np.asarray(jacobian, np.float64) @ np.asarray(jacobian, np.float64).T
  eigenvalues, vectors = np.linalg.eigh(gram)
  rank = (eigenvalues > eigenvalues.max() * len(gram) * np.finfo(np.float32).eps).sum()
  order = np.argsort(eigenvalues)[::-1][:rank]
  eigenvalues, vectors = eigenvalues[order], vectors[:, order]
  scale = {"min": eigenvalues[-1], "median": np.sort(eigenvalues)[(rank - 1) // 2],
           "rmse": eigenvalues.mean()}[scale_mode]
  balance = vectors @ np.diag(np.sqrt(scale / eigenvalues)) @ vectors.T
  return balance.sum(axis=1)


JACOBIANS = {
    "two_conflicting": [[1.0, 0.0], [-0.5, 1.0]],
    "three_tasks": [[1.0, 0.2, 0.0, 0.3], [-0.9, 0.5, 0.1, 0.0], [0.1, -1.0, 0.3, 2.0]],
    "seeded_4x6": np.random.default_rng(5).normal(size=(4, 6)),
    "rank_deficient": [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 2.0, 0.0], [-3.0, 0.5, 0.0]],
}


@pytest.mark.parametrize("scale_mode", aligned_mtl.SCALE_MODES)
@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_aligned_gradient_matrix_has_condition_number_one(name, scale_mode):
  jacobian = np.asarray(JACOBIANS[name], np.float64)
  gram = jnp.asarray(jacobian @ jacobian.T, jnp.float32)
  aligned = np.asarray(aligned_mtl.balance_matrix(gram, scale_mode), np.float64) @ jacobian
  singular = np.linalg.svd(aligned, compute_uv=False)
  nonzero = singular[singular > 1e-3 * singular.max()]
  assert len(nonzero) == np.linalg.matrix_rank(jacobian)
  np.testing.assert_allclose(nonzero.max() / nonzero.min(), 1.0, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_with_the_min_scale_every_singular_value_is_the_smallest_of_the_gradients(name):
  jacobian = np.asarray(JACOBIANS[name], np.float64)
  gram = jnp.asarray(jacobian @ jacobian.T, jnp.float32)
  aligned = np.asarray(aligned_mtl.balance_matrix(gram), np.float64) @ jacobian
  original = np.linalg.svd(jacobian, compute_uv=False)
  smallest = original[original > 1e-3 * original.max()].min()
  singular = np.linalg.svd(aligned, compute_uv=False)
  np.testing.assert_allclose(singular[singular > 1e-3 * smallest], smallest, rtol=1e-4)


@pytest.mark.parametrize("scale_mode", aligned_mtl.SCALE_MODES)
@pytest.mark.parametrize("name", sorted(JACOBIANS))
def test_the_weights_sum_the_aligned_gradients_as_the_official_code(name, scale_mode):
  np.testing.assert_allclose(_weights(JACOBIANS[name], scale_mode=scale_mode),
                             _official_weights(JACOBIANS[name], scale_mode), rtol=1e-4,
                             atol=1e-5)


def test_orthogonal_gradients_are_rescaled_to_the_smallest_norm():
  # G = diag(n_i^2): B = diag(n_min / n_i), every aligned gradient has norm n_min.
  norms = np.array([3.0, 0.5, 2.0])
  np.testing.assert_allclose(_weights(np.diag(norms)), 0.5 / norms, rtol=1e-5)
  # "median" is the lower median for an even count, as torch.median: eigenvalues 1, 4, 9, 16.
  np.testing.assert_allclose(_weights(np.diag([1.0, 2.0, 3.0, 4.0]), scale_mode="median"),
                             2.0 / np.array([1.0, 2.0, 3.0, 4.0]), rtol=1e-5)


def test_permuting_the_tasks_permutes_the_weights():
  jacobian = np.asarray(JACOBIANS["seeded_4x6"])
  order = [2, 0, 3, 1]
  np.testing.assert_allclose(_weights(jacobian[order]), _weights(jacobian)[order], rtol=1e-4)


def test_degenerate_gradients_are_dropped_with_their_directions():
  zero = _weights([[1.0, 2.0], [0.0, 0.0], [-1.0, 0.5]])
  np.testing.assert_allclose(zero[1], 0.0, atol=1e-6)
  np.testing.assert_allclose(zero[[0, 2]], _weights([[1.0, 2.0], [-1.0, 0.5]]), rtol=1e-4)
  parallel = np.array([[1.0, 2.0], [2.0, 4.0]])  # rank 1: B = v v^T, d = 3 g_1
  np.testing.assert_allclose(_weights(parallel) @ parallel, [3.0, 6.0], rtol=1e-5)
  opposite = np.array([[1.0, 2.0], [-1.0, -2.0]])
  np.testing.assert_allclose(_weights(opposite) @ opposite, 0.0, atol=1e-5)
  assert np.isfinite(_weights(np.zeros((2, 3)))).all()  # rank 0: B = I as torchjd


def test_a_task_without_labels_gets_weight_zero_and_the_others_are_aligned_without_it():
  jacobian = np.array([[1.0, 0.2, 0.0], [0.0, 0.0, 0.0], [-0.9, 0.5, 0.1]])
  weights = _weights(jacobian, counts=[1, 0, 1])
  assert weights[1] == 0.0
  np.testing.assert_allclose(weights[[0, 2]], _weights(jacobian[[0, 2]]), rtol=1e-4)


def test_weights_do_not_depend_on_the_scale_of_the_gradients():
  jacobian = np.asarray(JACOBIANS["three_tasks"])
  for scale in (1e-10, 1e10):
    np.testing.assert_allclose(_weights(scale * jacobian), _weights(jacobian), rtol=1e-4)


def test_the_state_keeps_the_last_weights():
  method, update = _method()
  inputs = weighting.make_inputs(np.ones(3), grads=jnp.asarray(JACOBIANS["three_tasks"]))
  weights, state = update(method.init(3), inputs)
  np.testing.assert_array_equal(state.weights, weights)


def test_reads_the_gram_matrix_and_allows_the_representation_mode():
  method = weighting.get("aligned_mtl")
  assert method.needs == "gram" and method.allows_rep


def test_an_unknown_scale_mode_is_a_value_error():
  with pytest.raises(ValueError, match="aligned_mtl scale_mode"):
    weighting.get("aligned_mtl", scale_mode="max")
