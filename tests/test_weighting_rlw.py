"""Random loss weighting (Lin et al., TMLR 2022): softmax of standard normal draws from the key."""

import jax
import numpy as np

from mtl_jax import weighting


def _weights(key, num_tasks=3, counts=None):
  method = weighting.get("rlw")
  inputs = weighting.make_inputs([1.0] * num_tasks, counts, key=key)
  w, _ = method.update(method.init(num_tasks), inputs)
  return np.asarray(w)


def test_weights_are_the_softmax_of_standard_normal_draws_from_the_key():
  key = jax.random.PRNGKey(7)
  expected = jax.nn.softmax(jax.random.normal(key, (3,)))
  np.testing.assert_allclose(_weights(key), expected, rtol=1e-6)
  np.testing.assert_allclose(_weights(key).sum(), 1.0, rtol=1e-6)  # not scaled by T


def test_the_same_key_gives_the_same_weights_and_another_key_others():
  np.testing.assert_array_equal(_weights(jax.random.PRNGKey(1)), _weights(jax.random.PRNGKey(1)))
  assert not np.allclose(_weights(jax.random.PRNGKey(1)), _weights(jax.random.PRNGKey(2)))


def test_the_state_does_not_change_the_draw():
  method = weighting.get("rlw")
  key = jax.random.PRNGKey(3)
  _, state = method.update(method.init(2), weighting.make_inputs([1.0, 1.0], key=key))
  w_again, _ = method.update(state, weighting.make_inputs([5.0, 0.1], key=key))
  np.testing.assert_array_equal(w_again, _weights(key, 2))


def test_tasks_without_labels_get_weight_zero_and_the_others_keep_their_draw():
  key = jax.random.PRNGKey(0)
  w = _weights(key, 3, counts=[0, 4, 0])
  np.testing.assert_array_equal(w[[0, 2]], 0.0)
  np.testing.assert_array_equal(w[1], _weights(key, 3)[1])  # not renormalised
