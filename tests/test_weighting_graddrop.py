"""GradDrop (Chen et al., NeurIPS 2020): per coordinate, keep one sign with probability P."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import Direction, graddrop

# Coordinate 0: both positive (P = 1); 1: +1 and -2 (P = 1/3); 2: all zero (P = 1/2);
# 3: +3 and -1 (P = 3/4).
JACOBIAN = np.array([[1.0, -2.0, 0.0, 3.0], [2.0, 1.0, 0.0, -1.0]], np.float32)


def _direction(grads, key=None, counts=None, **kwargs):
  method = weighting.get("graddrop", **kwargs)
  num_tasks = jax.tree.leaves(grads)[0].shape[0]
  inputs = weighting.make_inputs(np.ones(num_tasks), counts, key=key, grads=grads)
  result, state = method.update(method.init(num_tasks), inputs)
  assert isinstance(result, Direction)
  return result, state


def test_sign_purity_is_the_share_of_positive_gradient_mass():
  np.testing.assert_allclose(graddrop.sign_purity(jnp.asarray(JACOBIAN)),
                             [1.0, 1 / 3, 0.5, 0.75], rtol=1e-6)


def test_each_coordinate_keeps_the_positive_gradients_with_probability_p():
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  run = jax.jit(jax.vmap(lambda k: _direction(jnp.asarray(JACOBIAN), key=k)[0].grads))
  directions = np.asarray(run(keys))
  # Coordinate 0: signs agree, always kept; 2: nothing to keep.
  np.testing.assert_array_equal(directions[:, 0], 3.0)
  np.testing.assert_array_equal(directions[:, 2], 0.0)
  # Coordinates 1 and 3: either the positive or the negative gradients survive, never both.
  assert set(np.unique(directions[:, 1])) <= {1.0, -2.0}
  assert set(np.unique(directions[:, 3])) <= {3.0, -1.0}
  np.testing.assert_allclose((directions[:, 1] > 0).mean(), 1 / 3, atol=0.03)
  np.testing.assert_allclose((directions[:, 3] > 0).mean(), 3 / 4, atol=0.03)


def test_the_effective_weights_are_the_surviving_share_of_each_tasks_squared_gradient():
  result, state = _direction(jnp.asarray(JACOBIAN), key=jax.random.PRNGKey(1))
  d = np.asarray(result.grads)
  kept = [np.where(d * g > 0, g, 0.0) for g in JACOBIAN]  # a coordinate survives with d's sign
  expected = [k @ g / (g @ g) for k, g in zip(kept, JACOBIAN)]
  np.testing.assert_allclose(result.weights, expected, rtol=1e-6)
  np.testing.assert_allclose(state.weights, expected, rtol=1e-6)


def test_sign_consistent_gradients_pass_unchanged():
  jacobian = jnp.array([[1.0, -2.0, 0.5], [3.0, -0.1, 0.0], [0.2, -1.0, 4.0]])
  result, _ = _direction(jacobian, key=jax.random.PRNGKey(2))
  np.testing.assert_allclose(result.grads, jacobian.sum(0), rtol=1e-6)
  np.testing.assert_allclose(result.weights, [1.0, 1.0, 1.0], rtol=1e-6)


def test_leak_one_gives_the_plain_sum_and_per_task_leaks_keep_that_share():
  result, _ = _direction(jnp.asarray(JACOBIAN), leak=1.0)
  np.testing.assert_allclose(result.grads, JACOBIAN.sum(0), rtol=1e-6)
  key = jax.random.PRNGKey(3)
  masked, _ = _direction(jnp.asarray(JACOBIAN), key=key)
  leaky, _ = _direction(jnp.asarray(JACOBIAN), key=key, leak=(1.0, 0.0))
  # Task 0 passes whole; task 1 keeps exactly what it kept without leak.
  kept_1 = np.where(np.asarray(masked.grads) * JACOBIAN[1] > 0, JACOBIAN[1], 0.0)
  kept_1 = np.where(JACOBIAN[0] * JACOBIAN[1] > 0, JACOBIAN[1], kept_1)
  np.testing.assert_allclose(leaky.grads, JACOBIAN[0] + kept_1, rtol=1e-6)


def test_marginalised_over_the_batch_one_mask_per_feature_is_shared_by_all_examples():
  rng = np.random.default_rng(4)
  rep_grads = jnp.asarray(rng.normal(size=(3, 8, 5)), jnp.float32)  # [T, B, F]
  result, _ = _direction(rep_grads, key=jax.random.PRNGKey(5), marginalise_batch=True)
  d = np.asarray(result.grads)
  assert d.shape == (8, 5)
  signal = np.asarray(rep_grads).sum(1)  # [T, F], the batch-summed gradient of each task
  for feature in range(5):
    # The tasks kept at this feature are those whose summed gradient has the kept sign.
    candidates = [np.asarray(rep_grads)[signal[:, feature] > 0, :, feature].sum(0),
                  np.asarray(rep_grads)[signal[:, feature] < 0, :, feature].sum(0)]
    assert any(np.allclose(d[:, feature], c, atol=1e-6) for c in candidates)


@pytest.mark.parametrize("jacobian", [
    [[1.0, -2.0], [-1.0, 2.0]],   # exactly opposite: P = 1/2 everywhere, one sign survives
    [[1.0, 2.0], [0.0, 0.0]],     # a zero gradient
    [[1.0, 2.0], [3.0, 6.0]],     # parallel: signs agree, all kept
    [[0.0, 0.0], [0.0, 0.0]],
])
def test_degenerate_gradients_give_finite_directions_and_weights(jacobian):
  result, _ = _direction(jnp.asarray(jacobian, jnp.float32), key=jax.random.PRNGKey(6))
  assert np.isfinite(result.grads).all() and np.isfinite(result.weights).all()
  assert ((np.asarray(result.weights) >= 0) & (np.asarray(result.weights) <= 1)).all()


def test_a_task_without_labels_gets_weight_zero_and_changes_nothing():
  with_zero_row = jnp.asarray(np.vstack([JACOBIAN, np.zeros((1, 4))]), jnp.float32)
  key = jax.random.PRNGKey(7)
  result, _ = _direction(with_zero_row, key=key, counts=[2, 2, 0])
  assert result.weights[2] == 0.0
  # P and the kept signs depend only on the labelled tasks.
  kept = [np.where(np.asarray(result.grads) * g > 0, g, 0.0) for g in JACOBIAN]
  np.testing.assert_allclose(result.grads, sum(kept), rtol=1e-6)
  np.testing.assert_allclose(graddrop.sign_purity(with_zero_row),
                             graddrop.sign_purity(jnp.asarray(JACOBIAN)))


def test_pytrees_of_gradients_and_jit_equals_eager():
  rng = np.random.default_rng(8)
  grads = {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 4, 2)), jnp.float32),
                     "bias": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}}
  method = weighting.get("graddrop", leak=0.2)
  inputs = weighting.make_inputs(np.ones(3), key=jax.random.PRNGKey(9), grads=grads)
  state = method.init(3)
  (eager, _), (jitted, _) = method.update(state, inputs), jax.jit(method.update)(state, inputs)
  assert jax.tree.structure(eager.grads) == jax.tree.structure(
      jax.tree.map(lambda g: g[0], grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), jitted.grads,
               eager.grads)
  np.testing.assert_allclose(jitted.weights, eager.weights, rtol=1e-6)


def test_the_key_draws_the_mask():
  a, _ = _direction(jnp.asarray(JACOBIAN), key=jax.random.PRNGKey(10))
  b, _ = _direction(jnp.asarray(JACOBIAN), key=jax.random.PRNGKey(10))
  np.testing.assert_array_equal(a.grads, b.grads)
  draws = {tuple(np.asarray(_direction(jnp.asarray(JACOBIAN), key=jax.random.PRNGKey(s))[0]
                            .grads)) for s in range(10)}
  assert len(draws) > 1


def test_graddrop_needs_the_gradients_and_allows_the_representation_mode():
  method = weighting.get("graddrop")
  assert method.needs == "grads" and method.allows_rep


@pytest.mark.parametrize("kwargs", [{"leak": 1.5}, {"leak": (-0.1, 0.0)}])
def test_bad_leaks_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="graddrop"):
    weighting.get("graddrop", **kwargs)


def test_leaks_must_match_the_number_of_tasks():
  with pytest.raises(ValueError, match="2 leaks for 3 tasks"):
    weighting.get("graddrop", leak=(0.0, 0.5)).init(3)
