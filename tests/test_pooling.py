"""max_pool_2x2: nn.max_pool's values, and its gradient routed to each window's first maximum."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.models.pooling import max_pool_2x2


def flax_pool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


def distinct_inputs(shape, seed=0):
  """f32 inputs without ties: a random permutation of 0..n-1, scaled."""
  values = np.random.default_rng(seed).permutation(np.prod(shape)).astype(np.float32)
  return jnp.asarray(values.reshape(shape) / 7.0 - 3.0)


def weighted_sum_grad(pool, x, seed=1):
  """d/dx of sum(pool(x) * r) for a fixed random r: every window's cotangent differs."""
  r = jax.random.normal(jax.random.PRNGKey(seed), pool(x).shape)
  return jax.grad(lambda x: (pool(x) * r).sum())(x)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (3, 7, 9, 2), (1, 5, 4, 1), (2, 1, 6, 2)])
def test_values_equal_flax_max_pool_with_odd_edges_dropped(shape):
  x = distinct_inputs(shape)
  np.testing.assert_array_equal(max_pool_2x2(x), flax_pool(x))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (3, 7, 9, 2), (1, 5, 4, 1)])
def test_gradient_equals_flax_max_pool_without_ties(shape):
  x = distinct_inputs(shape)
  np.testing.assert_array_equal(weighted_sum_grad(max_pool_2x2, x),
                                weighted_sum_grad(flax_pool, x))


def test_gradient_with_ties_goes_to_the_first_maximum_only():
  window_orders = [  # the four values of one 2x2 window, row-major
      [5.0, 5.0, 5.0, 5.0],   # all tied: the top-left
      [1.0, 5.0, 5.0, 2.0],   # top-right before bottom-left
      [1.0, 2.0, 5.0, 5.0],   # bottom-left before bottom-right
      [0.0, 0.0, 0.0, 3.0],   # one maximum, last
  ]
  x = jnp.asarray(np.array(window_orders, np.float32).reshape(4, 2, 2, 1))
  grad = jax.grad(lambda x: (max_pool_2x2(x) * 10.0).sum())(x)
  expected = np.array([[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0], [0, 0, 0, 10]], np.float32)
  np.testing.assert_array_equal(grad.reshape(4, 4), expected)


def test_gradient_with_random_ties_matches_flax_and_sums_to_the_cotangent():
  x = jnp.asarray(np.random.default_rng(2).integers(0, 3, (4, 6, 6, 5)).astype(np.float32))
  mine, theirs = weighted_sum_grad(max_pool_2x2, x), weighted_sum_grad(flax_pool, x)
  np.testing.assert_array_equal(mine, theirs)
  nonzero_per_window = (mine != 0).reshape(4, 3, 2, 3, 2, 5).sum(axis=(2, 4))
  assert (nonzero_per_window == 1).all()


def test_jit_and_vmap_agree_with_eager():
  x = distinct_inputs((3, 2, 6, 6, 2))
  grad = jax.grad(lambda x: max_pool_2x2(x).sum())
  np.testing.assert_array_equal(jax.jit(jax.vmap(grad))(x), jnp.stack([grad(xi) for xi in x]))
