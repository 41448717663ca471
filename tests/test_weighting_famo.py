"""FAMO (Liu et al., NeurIPS 2023): weights z_i / (c D_i), one Adam step of the logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import famo

EPS = 1e-8


def _run(method, num_tasks, losses_per_step, counts_per_step=None):
  """The weights of every step and the final state."""
  state = method.init(num_tasks)
  weights = []
  for i, losses in enumerate(losses_per_step):
    counts = None if counts_per_step is None else counts_per_step[i]
    w, state = method.update(state, weighting.make_inputs(losses, counts, step=i))
    weights.append(np.asarray(w))
  return np.asarray(weights), state


def _famo_objective(losses, logits):
  """sum_i z_i log(L_i + eps) / c, c = sum_i z_i / (L_i + eps) held constant."""
  z = jax.nn.softmax(logits)
  c = jax.lax.stop_gradient((z / (losses + EPS)).sum())
  return (z * jnp.log(losses + EPS)).sum() / c


def _adam_step_by_hand(logits, grad, m, v, count, lr=0.025, gamma=1e-3):
  """torch's Adam(weight_decay=gamma): L2 term added to the gradient, bias-corrected moments."""
  grad = grad + gamma * logits
  m, v, count = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2, count + 1
  m_hat, v_hat = m / (1 - 0.9**count), v / (1 - 0.999**count)
  return logits - lr * m_hat / (np.sqrt(v_hat) + 1e-8), m, v, count


def test_first_step_weights_are_inverse_losses_normalised_to_sum_one():
  # z = (1/3, 1/3, 1/3): w_i = (1/L_i) / sum_j (1/L_j) = (4, 2, 1) / 7.
  weights, state = _run(weighting.get("famo"), 3, [[1.0, 2.0, 4.0]])
  np.testing.assert_allclose(weights[0], np.array([4.0, 2.0, 1.0]) / 7, rtol=1e-6)
  np.testing.assert_array_equal(state.logits, [0.0, 0.0, 0.0])  # no delta yet: no logit step


def test_weights_are_the_gradient_of_the_famo_objective():
  logits = jnp.array([0.3, -0.2, 0.5])
  losses = jnp.array([0.7, 2.5, 0.1])
  expected = jax.grad(_famo_objective)(losses, logits)
  actual = famo.famo_weights(logits, losses, jnp.ones(3, bool), jnp.zeros(3), EPS)
  np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_logit_gradient_is_the_softmax_vjp_of_delta():
  logits, delta = jnp.array([0.3, -0.2, 0.5]), jnp.array([0.4, -0.1, 0.2])
  _, vjp = jax.vjp(jax.nn.softmax, logits)
  np.testing.assert_allclose(famo.logit_gradient(logits, delta), vjp(delta)[0], atol=1e-7)


def test_two_logit_updates_equal_hand_computed_adam_steps_on_j_transpose_delta():
  sequence = [[1.0, 2.0], [0.5, 1.8], [0.4, 1.0]]
  weights, state = _run(weighting.get("famo"), 2, sequence)
  logits, m, v, count = np.zeros(2), np.zeros(2), np.zeros(2), 0
  for prev, now, w in zip(sequence, sequence[1:], weights[1:]):
    delta = np.log(np.array(prev) + EPS) - np.log(np.array(now) + EPS)
    z = np.exp(logits) / np.exp(logits).sum()
    grad = z * (delta - z @ delta)  # J_softmax^T delta
    logits, m, v, count = _adam_step_by_hand(logits, grad, m, v, count)
    # The step's weights come from the logits updated on this step's delta.
    z = np.exp(logits) / np.exp(logits).sum()
    ratio = z / (np.array(now) + EPS)
    np.testing.assert_allclose(w, ratio / ratio.sum(), rtol=1e-5)
  np.testing.assert_allclose(state.logits, logits, rtol=1e-5, atol=1e-7)
  # The task whose loss fell faster (task 0, log 2 then log 1.25) lost weight in the softmax.
  assert state.logits[0] < state.logits[1]


def test_min_losses_shift_every_loss():
  weights, _ = _run(weighting.get("famo", min_losses=(1.0, 0.0)), 2, [[3.0, 1.0]])
  np.testing.assert_allclose(weights[0], [1 / 3, 2 / 3], rtol=1e-6)  # D = (2, 1)


def test_a_task_without_labels_gets_weight_zero_no_delta_and_keeps_its_previous_loss():
  sequence = [[1.0, 2.0, 4.0], [0.8, 0.0, 3.0], [0.7, 1.0, 2.5]]
  counts = [[4, 4, 4], [4, 0, 4], [4, 4, 4]]
  weights, state = _run(weighting.get("famo"), 3, sequence, counts)
  assert np.isfinite(weights).all()
  assert weights[1][1] == 0.0
  np.testing.assert_allclose(weights[1].sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(state.prev_losses, [0.7, 1.0, 2.5])
  # Step 1: task 1's delta is 0, not log(2) - log(0 + eps) = 19.1 from its fake loss 0.
  # Step 2: task 1's delta compares its loss with the one kept from step 0 (2.0 -> 1.0).
  deltas = [np.log([1.0 / 0.8, 1.0, 4.0 / 3.0]), np.log([0.8 / 0.7, 2.0 / 1.0, 3.0 / 2.5])]
  logits, m, v, count = np.zeros(3), np.zeros(3), np.zeros(3), 0
  for delta in deltas:
    z = np.exp(logits) / np.exp(logits).sum()
    logits, m, v, count = _adam_step_by_hand(logits, z * (delta - z @ delta), m, v, count)
  np.testing.assert_allclose(state.logits, logits, rtol=1e-5, atol=1e-7)


def test_a_step_without_any_labels_leaves_the_state_unchanged():
  method = weighting.get("famo")
  _, state = _run(method, 2, [[1.0, 2.0], [0.5, 1.0]])
  w, after = method.update(state, weighting.make_inputs([0.0, 0.0], [0, 0], step=2))
  np.testing.assert_array_equal(w, [0.0, 0.0])
  jax.tree.map(np.testing.assert_array_equal, after, state)


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"gamma": -1.0}, {"eps": 0.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="famo"):
    weighting.get("famo", **kwargs)


def test_min_losses_must_match_the_number_of_tasks():
  with pytest.raises(ValueError, match="2 min_losses for 3 tasks"):
    weighting.get("famo", min_losses=(0.0, 0.0)).init(3)
