"""log_losses=True (DB-MTL's log transform): a gradient method run on the gradients of log L_i."""

import functools

import jax
import numpy as np
import pytest

from mtl_jax import weighting

J = np.array([[1.0, -2.0, 0.5, 0.0, 3.0],
              [0.5, 1.0, -1.0, 2.0, 0.0],
              [-1.5, 0.5, 2.0, 1.0, -0.5]], np.float32)
LOSSES = np.array([0.5, 1.0, 2.0], np.float32)
# Gram methods, MoCo (reads the gradients, keeps them in its state) and GradDrop (a Direction).
METHODS = ("mgda", "cagrad", "nash_mtl", "moco", "graddrop")


@functools.cache
def _update(name, log_losses):
  method = weighting.get(name, log_losses=log_losses)
  return method, jax.jit(method.update)


def _direction(name, jacobian, losses, counts=None, log_losses=True):
  """(the update sum_i w_i g_i, or the method's Direction, as f64[D]; the weights f32[T])."""
  method, update = _update(name, log_losses)
  jacobian = np.asarray(jacobian, np.float32)
  state = (method.init(3, grads_like=jacobian) if method.grad_state else method.init(3))
  inputs = weighting.make_inputs(losses, counts, key=jax.random.PRNGKey(3), grads=jacobian)
  result, _ = update(state, inputs)
  if isinstance(result, weighting.Direction):
    return np.asarray(result.grads, np.float64), np.asarray(result.weights)
  return np.asarray(result, np.float64) @ jacobian, np.asarray(result)


@pytest.mark.parametrize("name", METHODS)
def test_the_update_is_the_methods_update_on_the_gradients_of_log_l(name):
  """d = the plain method's update on g_i / L_i (and its weights w'_i / L_i on the raw g_i)."""
  log_gradients = J / LOSSES[:, None]
  expected, expected_weights = _direction(name, log_gradients, LOSSES, log_losses=False)
  direction, weights = _direction(name, J, LOSSES)
  np.testing.assert_allclose(direction, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(weights, expected_weights / LOSSES, rtol=1e-4, atol=1e-6)


# MoCo also reads the raw losses (it rescales each g_i to L_i g_i / ||g_i||), so is left out.
@pytest.mark.parametrize("name", [m for m in METHODS if m != "moco"])
def test_rescaling_a_tasks_loss_does_not_change_the_update(name):
  """log(c L_i) = log c + log L_i: a task's loss scale (L_i -> c L_i, g_i -> c g_i) drops out."""
  scales = np.array([1e-3, 1.0, 50.0], np.float32)
  direction, _ = _direction(name, J, LOSSES)
  rescaled, _ = _direction(name, J * scales[:, None], LOSSES * scales)
  np.testing.assert_allclose(rescaled, direction, atol=1e-4 * np.abs(direction).max())  # float32


def test_a_task_without_labels_keeps_weight_zero():
  jacobian, losses = J.copy(), LOSSES.copy()
  jacobian[1], losses[1] = 0.0, 0.0
  for name in ("mgda", "cagrad", "nash_mtl"):
    _, weights = _direction(name, jacobian, losses, counts=[4, 0, 4])
    assert weights[1] == 0.0 and np.isfinite(weights).all(), (name, weights)


def test_loss_only_methods_refuse_the_switch_and_name_si():
  with pytest.raises(ValueError, match="'uncertainty'.*reads only the losses.*'si'"):
    weighting.get("uncertainty", log_losses=True)
  with pytest.raises(ValueError, match="log_losses must be True or False"):
    weighting.get("mgda", log_losses="yes")
