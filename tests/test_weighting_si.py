"""SI (scale-invariant scalarisation): the gradient of sum_i log L_i, so w_i = 1 / L_i."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting


def _weights(losses, counts=None, **kwargs):
  method = weighting.get("si", **kwargs)
  w, _ = method.update(method.init(len(losses)), weighting.make_inputs(losses, counts))
  return np.asarray(w)


@pytest.mark.parametrize("losses", [[0.3, 1.7], [2.0, 0.05, 0.9, 3.0], [1e-3, 40.0, 7.0]])
def test_weights_are_the_gradient_of_the_sum_of_log_losses(losses):
  losses = jnp.asarray(losses)
  expected = jax.grad(lambda l: jnp.sum(jnp.log(l + 1e-8)))(losses)
  np.testing.assert_allclose(_weights(losses), expected, rtol=1e-6)
  np.testing.assert_allclose(_weights(losses) * losses, 1.0, rtol=2e-5)  # each w_i L_i = 1 (to eps)


def test_scaling_a_tasks_loss_leaves_its_weighted_gradient_unchanged():
  # L_1 -> c L_1 scales grad L_1 by c as well; w_1 grad L_1 must not change.
  jacobian = np.random.default_rng(0).normal(size=(3, 5))
  losses = np.array([0.5, 1.0, 2.0])
  scales = np.array([1.0, 1e3, 1e-3])
  direction = _weights(losses) @ jacobian
  scaled = _weights(losses * scales) @ (scales[:, None] * jacobian)
  np.testing.assert_allclose(scaled, direction, rtol=1e-5)


def test_a_task_without_labels_gets_weight_zero():
  np.testing.assert_array_equal(_weights([2.0, 0.0, 4.0], counts=[5, 0, 5]), [0.5, 0.0, 0.25])


@pytest.mark.parametrize("loss", [0.0, -1.0])
def test_a_loss_at_or_below_zero_gets_the_finite_weight_one_over_eps(loss):
  np.testing.assert_allclose(_weights([loss, 1.0], eps=1e-4), [1e4, 1.0 / (1.0 + 1e-4)],
                             rtol=1e-6)


@pytest.mark.parametrize("eps", [0.0, -1e-8])
def test_eps_must_be_positive(eps):
  with pytest.raises(ValueError, match="si needs eps"):
    weighting.get("si", eps=eps)
