"""TrimmedMean (Yin et al., ICML 2018): per coordinate, the mean of the task gradients without
the k largest and k smallest values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import Direction

# torchjd's tests/unit/aggregation/test_values.py: TrimmedMean(trim_number=1) gives (1.5, 2.5).
J_TORCHJD = np.array([[1e11, 3.0], [1.0, -1e11], [-1e10, 1e10], [2.0, 2.0]], np.float32)


def _direction(grads, counts=None, **kwargs):
  method = weighting.get("trimmed_mean", **kwargs)
  num_tasks = jax.tree.leaves(grads)[0].shape[0]
  inputs = weighting.make_inputs(np.ones(num_tasks), counts, grads=grads)
  result, state = jax.jit(method.update)(method.init(num_tasks), inputs)
  assert isinstance(result, Direction)
  np.testing.assert_array_equal(state.weights, result.weights)
  return result


def _trimmed_mean_by_sorting(jacobian, k):
  ordered = np.sort(np.asarray(jacobian, np.float64), axis=0)
  return ordered[k:len(jacobian) - k].mean(axis=0)


@pytest.mark.parametrize("num_tasks, trim_number", [(3, 0), (3, 1), (4, 1), (7, 2), (8, 3)])
def test_each_coordinate_is_the_mean_of_its_middle_values(num_tasks, trim_number):
  jacobian = np.random.default_rng(num_tasks).normal(size=(num_tasks, 9)).astype(np.float32)
  result = _direction(jnp.asarray(jacobian), trim_number=trim_number)
  np.testing.assert_allclose(result.grads, _trimmed_mean_by_sorting(jacobian, trim_number),
                             rtol=1e-5, atol=1e-6)


def test_torchjds_pinned_values_ignore_the_huge_outliers():
  np.testing.assert_allclose(_direction(jnp.asarray(J_TORCHJD)).grads, [1.5, 2.5], rtol=1e-6)


def test_the_weights_are_the_kept_share_of_each_squared_gradient_over_n_minus_2k():
  # Coordinate 0 keeps task 1 (values 3, 1, -2: the median); coordinate 1 keeps task 0
  # (values 2, 5, -1).
  jacobian = np.array([[3.0, 2.0], [1.0, 5.0], [-2.0, -1.0]], np.float32)
  result = _direction(jnp.asarray(jacobian))
  np.testing.assert_allclose(result.grads, [1.0, 2.0])
  np.testing.assert_allclose(result.weights, [4.0 / 13.0, 1.0 / 26.0, 0.0], rtol=1e-6)


def test_no_trimming_is_the_mean_with_weights_one_over_n():
  jacobian = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
  result = _direction(jnp.asarray(jacobian), trim_number=0)
  np.testing.assert_allclose(result.grads, jacobian.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result.weights, [0.25] * 4, rtol=1e-6)


def test_tasks_without_labels_are_left_out_and_the_trim_shrinks_to_fit():
  rng = np.random.default_rng(2)
  jacobian = rng.normal(size=(6, 5)).astype(np.float32)
  jacobian[[2, 5]] = 0.0
  result = _direction(jnp.asarray(jacobian), counts=[4, 4, 0, 4, 4, 0], trim_number=1)
  labelled = jacobian[[0, 1, 3, 4]]
  np.testing.assert_allclose(result.grads, _trimmed_mean_by_sorting(labelled, 1), rtol=1e-5)
  assert result.weights[2] == result.weights[5] == 0.0
  # Two labelled tasks of five with k = 2: k shrinks to 0, their mean.
  five = _direction(jnp.asarray(jacobian[:5]), counts=[4, 4, 0, 0, 0], trim_number=2)
  np.testing.assert_allclose(five.grads, jacobian[:2].mean(0), rtol=1e-5, atol=1e-6)


def test_pytrees_of_gradients_are_trimmed_leaf_by_leaf():
  rng = np.random.default_rng(3)
  grads = {"kernel": rng.normal(size=(5, 3, 2)).astype(np.float32),
           "bias": rng.normal(size=(5, 2)).astype(np.float32)}
  result = _direction(jax.tree.map(jnp.asarray, grads), trim_number=2)
  for name, leaf in grads.items():
    np.testing.assert_allclose(result.grads[name], _trimmed_mean_by_sorting(leaf, 2), rtol=1e-5)


def test_trimmed_mean_needs_the_gradients():
  method = weighting.get("trimmed_mean")
  assert method.needs == "grads" and not method.allows_rep


@pytest.mark.parametrize("trim_number", [-1, 0.5])
def test_bad_trim_numbers_are_value_errors(trim_number):
  with pytest.raises(ValueError, match="trimmed_mean"):
    weighting.get("trimmed_mean", trim_number=trim_number)


def test_too_few_tasks_for_the_trim_is_a_value_error():
  with pytest.raises(ValueError, match="trimmed_mean with trim_number=1 needs at least 3"):
    weighting.get("trimmed_mean").init(2)
