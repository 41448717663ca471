"""IMTL (Liu et al., ICLR 2021): equal projections (IMTL-G), learnable loss scales (IMTL-L)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import imtl




@functools.cache
def _jitted(method):
  """The method's update under one jax.jit, shared by the tests (compiles are slow)."""
  return jax.jit(method.update)


GRADIENT_MODE = weighting.get("imtl", mode="gradient")


def _step(method, state, jacobian, losses=None, counts=None):
  jacobian = jnp.asarray(jacobian, jnp.float32)
  losses = np.ones(len(jacobian)) if losses is None else losses
  w, state = _jitted(method)(state, weighting.make_inputs(losses, counts, grads=jacobian))
  return np.asarray(w, np.float64), state


def _gradient_weights(jacobian, counts=None):
  return _step(GRADIENT_MODE, GRADIENT_MODE.init(len(jacobian)), jacobian, counts=counts)[0]


def _units(jacobian):
  jacobian = np.asarray(jacobian, np.float64)
  return jacobian / np.linalg.norm(jacobian, axis=1, keepdims=True)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_imtl_g_direction_has_equal_projections_on_every_unit_gradient(num_tasks, seed):
  jacobian = np.random.default_rng(seed).normal(size=(num_tasks, 7))
  jacobian *= np.geomspace(0.1, 10.0, num_tasks)[:, None]  # very different gradient norms
  alpha = _gradient_weights(jacobian)
  np.testing.assert_allclose(alpha.sum(), 1.0, atol=1e-5)
  projections = _units(jacobian) @ (alpha @ jacobian)
  np.testing.assert_allclose(projections, np.full(num_tasks, projections[0]),
                             rtol=1e-4, atol=1e-5 * np.abs(jacobian).max())


def test_imtl_g_equals_the_papers_closed_form():
  # alpha_{2:T} = g_1 U^T (D U^T)^{-1}, D = [g_1 - g_t], U = [u_1 - u_t]; alpha_1 = 1 - sum.
  jacobian = np.random.default_rng(2).normal(size=(4, 5))
  units = _units(jacobian)
  d_rows, u_rows = jacobian[0] - jacobian[1:], units[0] - units[1:]
  rest = jacobian[0] @ u_rows.T @ np.linalg.inv(d_rows @ u_rows.T)
  np.testing.assert_allclose(_gradient_weights(jacobian), np.r_[1 - rest.sum(), rest],
                             rtol=1e-4, atol=1e-5)


def test_imtl_g_with_one_task_is_that_tasks_gradient():
  np.testing.assert_allclose(_gradient_weights([[2.0, -1.0]]), [1.0])


@pytest.mark.parametrize("jacobian, weights", [
    ([[1.0, -2.0], [-1.0, 2.0]], [0.5, 0.5]),   # exactly opposite: equal projections 0, d = 0
    ([[1.0, 1.0], [2.0, 2.0]], [0.5, 0.5]),     # parallel: every alpha works; the min-norm one
    ([[1.0, 2.0], [0.0, 0.0]], [1.0, 0.0]),     # a zero gradient is left out
    ([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0]),
])
def test_imtl_g_degenerate_gradients(jacobian, weights):
  np.testing.assert_allclose(_gradient_weights(jacobian), weights, atol=1e-6)


def test_imtl_g_leaves_out_a_task_without_labels():
  jacobian = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.2, 3.0, 0.0]])
  alpha = _gradient_weights(jacobian, counts=[3, 0, 3])
  assert np.isfinite(alpha).all() and alpha[1] == 0.0
  np.testing.assert_allclose(alpha[[0, 2]], _gradient_weights(jacobian[[0, 2]]), atol=1e-6)


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_imtl_g_does_not_depend_on_the_gradient_scale(scale):
  jacobian = np.random.default_rng(3).normal(size=(3, 4))
  np.testing.assert_allclose(_gradient_weights(scale * jacobian), _gradient_weights(jacobian),
                             rtol=1e-4)


def test_imtl_l_weights_are_e_to_the_s_and_s_descends_e_to_the_s_l_minus_s():
  method = weighting.get("imtl", mode="loss", optimizer=optax.sgd(0.1))
  assert method.needs == "losses"
  state = method.init(2)
  losses = np.array([2.0, 0.5])
  s = np.zeros(2)
  for _ in range(3):
    w, state = _jitted(method)(state, weighting.make_inputs(losses))
    np.testing.assert_allclose(w, np.exp(s), rtol=1e-6)   # weights of s before the step
    s = s - 0.1 * (np.exp(s) * losses - 1.0)              # d/ds (e^s L - s)
    np.testing.assert_allclose(state.log_scales, s, rtol=1e-5)


def test_imtl_l_scales_settle_where_every_scaled_loss_is_one():
  method = weighting.get("imtl", mode="loss", optimizer=optax.sgd(0.5))
  state = method.init(2)
  update = jax.jit(method.update)
  for _ in range(200):
    _, state = update(state, weighting.make_inputs([4.0, 0.25]))
  np.testing.assert_allclose(np.exp(state.log_scales) * [4.0, 0.25], [1.0, 1.0], rtol=1e-4)


def test_hybrid_applies_imtl_g_to_the_gradients_of_the_scaled_losses():
  method = weighting.get("imtl", optimizer=optax.sgd(0.1))
  assert method.needs == "gram" and method.allows_rep
  jacobian = np.random.default_rng(4).normal(size=(3, 5))
  losses = np.array([1.5, 0.3, 0.8])
  state = method.init(3)._replace(log_scales=jnp.array([0.2, -0.4, 0.1]))
  w, new_state = _step(method, state, jacobian, losses)
  scales = np.exp([0.2, -0.4, 0.1])
  alpha = _gradient_weights(scales[:, None] * jacobian)
  np.testing.assert_allclose(w, alpha * scales, rtol=1e-4)
  # The direction still has equal projections on the unit gradients.
  projections = _units(jacobian) @ (w @ jacobian)
  np.testing.assert_allclose(projections, np.full(3, projections[0]), rtol=1e-4)
  np.testing.assert_allclose(new_state.log_scales,
                             np.log(scales) - 0.1 * (scales * losses - 1.0), rtol=1e-5)


def test_a_task_without_labels_keeps_its_scale_and_gets_weight_zero():
  method = weighting.get("imtl")
  state = method.init(3)._replace(log_scales=jnp.array([0.1, 0.3, -0.2]))
  jacobian = [[1.0, 0.0], [0.0, 0.0], [0.5, 1.0]]
  w, new_state = _step(method, state, jacobian, losses=[1.0, 0.0, 2.0], counts=[2, 0, 2])
  assert np.isfinite(w).all() and w[1] == 0.0
  assert new_state.log_scales[1] == np.float32(0.3)
  assert new_state.log_scales[0] != np.float32(0.1)
  adam_mu = new_state.opt_state[0].mu
  assert adam_mu[1] == 0.0 and adam_mu[0] != 0.0


@pytest.mark.parametrize("mode", [m for m in imtl.MODES if m != "hybrid"])
def test_jit_equals_eager_in_the_modes_besides_the_default(mode):
  """The default mode is checked with every method in test_weighting_properties.py."""
  method = weighting.get("imtl", mode=mode)
  jacobian = jnp.asarray(np.random.default_rng(5).normal(size=(4, 6)), jnp.float32)
  inputs = weighting.make_inputs([0.5, 1.0, 2.0, 0.1], [1, 1, 0, 1], grads=jacobian)
  state = method.init(4)._replace(log_scales=jnp.array([0.1, 0.0, -0.1, 0.2]))
  (w_eager, s_eager), (w_jit, s_jit) = method.update(state, inputs), jax.jit(method.update)(
      state, inputs)
  np.testing.assert_allclose(w_jit, w_eager, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s_jit.log_scales, s_eager.log_scales, rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"mode": "both"}, {"rcond": 0.0}, {"eps": -1.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="imtl"):
    weighting.get("imtl", **kwargs)
