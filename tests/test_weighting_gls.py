"""GLS (Chennupati et al., CVPRW 2019): weights are the gradient of the geometric mean."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting


def _weights(losses, counts=None, **kwargs):
  method = weighting.get("gls", **kwargs)
  w, _ = method.update(method.init(len(losses)), weighting.make_inputs(losses, counts))
  return np.asarray(w)


def _geometric_mean(losses):
  return jnp.prod(losses) ** (1.0 / losses.shape[0])


def test_weights_are_g_over_t_times_each_loss_by_hand():
  # L = (1, 2, 4): G = 8^(1/3) = 2, so w = 2 / (3 L) = (2/3, 1/3, 1/6).
  np.testing.assert_allclose(_weights([1.0, 2.0, 4.0]), [2 / 3, 1 / 3, 1 / 6], rtol=1e-6)


@pytest.mark.parametrize("losses", [[0.3, 1.7], [2.0, 0.05, 0.9, 3.0], [1e-3, 40.0, 7.0]])
def test_weights_are_the_gradient_of_the_geometric_mean(losses):
  losses = jnp.asarray(losses)
  np.testing.assert_allclose(_weights(losses), jax.grad(_geometric_mean)(losses), rtol=1e-5)


def test_a_task_without_labels_is_left_out_of_the_product_and_gets_weight_zero():
  # Task 1 has no labels: the geometric mean is over (1, 4) only, G = 2, T = 2.
  w = _weights([1.0, 0.0, 4.0], counts=[5, 0, 5])
  np.testing.assert_allclose(w, [1.0, 0.0, 0.25], rtol=1e-6)
  assert np.isfinite(w).all()


def test_no_labelled_task_gives_all_zero_weights():
  np.testing.assert_array_equal(_weights([0.0, 0.0], counts=[0, 0]), [0.0, 0.0])


def test_a_zero_loss_is_floored_at_epsilon_and_the_weights_stay_finite():
  w = _weights([0.0, 1.0], epsilon=1e-4)
  # The guarded objective sqrt(max(L0, 1e-4) * L1): G = 1e-2, w = G / (2 max(L, 1e-4)).
  np.testing.assert_allclose(w, [1e-2 / 2e-4, 1e-2 / 2], rtol=1e-5)


def test_many_tiny_losses_do_not_underflow():
  w = _weights([1e-30] * 8 + [1.0] * 8)
  assert np.isfinite(w).all() and (w > 0).all()


def test_permuting_tasks_permutes_weights():
  np.testing.assert_allclose(_weights([1.0, 0.5, 2.0]), _weights([0.5, 2.0, 1.0])[[2, 0, 1]],
                             rtol=1e-6)


def test_epsilon_must_be_positive():
  with pytest.raises(ValueError, match="epsilon"):
    weighting.get("gls", epsilon=0.0)
