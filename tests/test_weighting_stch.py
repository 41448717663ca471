"""STCH (Lin et al., ICML 2024): warm-up, nadir from the warm-up's last epoch, softmax weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting

# Two plain warm-up steps, then two steps averaged into the nadir; STCH from step 4 on.
SCHEDULE = {"warmup_steps": 2, "nadir_steps": 2}
LOSSES = [[2.0, 8.0], [1.0, 4.0], [0.6, 3.0], [0.4, 1.0], [0.25, 1.0], [0.1, 0.5]]
NADIR = [(0.6 + 0.4) / 2, (3.0 + 1.0) / 2]  # the mean of steps 2 and 3


def _run(method, num_tasks, losses_per_step, counts_per_step=None):
  """The weights of every step and the final state."""
  state = method.init(num_tasks)
  weights = []
  for i, losses in enumerate(losses_per_step):
    counts = None if counts_per_step is None else counts_per_step[i]
    w, state = method.update(state, weighting.make_inputs(losses, counts, step=i))
    weights.append(np.asarray(w))
  return np.asarray(weights), state


def _official_objective(losses, nadir, mu):
  """T mu log sum_i exp(log(L_i / n_i) / mu), the official code's scalarisation."""
  return losses.shape[0] * mu * jax.nn.logsumexp(jnp.log(losses / nadir) / mu)


def _paper_objective(losses, nadir, mu):
  """T mu log sum_i exp((L_i / n_i) / mu): STCH with lambda_i = 1 / n_i, ideal point 0."""
  return losses.shape[0] * mu * jax.nn.logsumexp(losses / nadir / mu)


def test_official_warmup_weights_are_one_over_each_loss():
  # During warm-up the official code minimises sum_i log L_i: equal weights on log losses.
  weights, _ = _run(weighting.get("stch", log_losses=True, **SCHEDULE), 2, LOSSES[:4])
  np.testing.assert_allclose(weights, 1.0 / np.asarray(LOSSES[:4]), rtol=1e-6)


def test_nadir_is_the_mean_loss_over_the_last_warmup_epoch():
  _, state = _run(weighting.get("stch", **SCHEDULE), 2, LOSSES)
  np.testing.assert_allclose(state.nadir, NADIR, rtol=1e-6)
  np.testing.assert_array_equal(state.nadir_count, [2, 2])


@pytest.mark.parametrize("mu", [1.0, 0.1])
def test_after_warmup_weights_are_the_gradient_of_the_official_objective(mu):
  weights, _ = _run(weighting.get("stch", log_losses=True, mu=mu, **SCHEDULE), 2, LOSSES)
  for w, losses in zip(weights[4:], LOSSES[4:]):
    expected = jax.grad(_official_objective)(jnp.asarray(losses), jnp.asarray(NADIR), mu)
    np.testing.assert_allclose(w, expected, rtol=1e-5)


def test_after_warmup_weights_by_hand():
  # Step 4: a = log(0.25 / 0.5), log(1 / 2) = (-log 2, -log 2), so softmax = (1/2, 1/2) and
  # w_i = T softmax_i / L_i = 2 (1/2) / L_i = (4, 1).
  weights, _ = _run(weighting.get("stch", log_losses=True, **SCHEDULE), 2, LOSSES[:5])
  np.testing.assert_allclose(weights[4], [4.0, 1.0], rtol=1e-5)


def test_raw_losses_warm_up_with_equal_weights_then_softmax_over_nadir_normalised_losses():
  weights, _ = _run(weighting.get("stch", log_losses=False, mu=0.5, **SCHEDULE), 2, LOSSES)
  np.testing.assert_array_equal(weights[:4], np.ones((4, 2)))
  for w, losses in zip(weights[4:], LOSSES[4:]):
    expected = jax.grad(_paper_objective)(jnp.asarray(losses), jnp.asarray(NADIR), 0.5)
    np.testing.assert_allclose(w, expected, rtol=1e-5)
  # By hand at step 4: L / n = (0.5, 0.5), softmax = (1/2, 1/2), w_i = 2 (1/2) / n_i.
  np.testing.assert_allclose(weights[4], 1.0 / np.asarray(NADIR), rtol=1e-5)


def test_small_mu_puts_almost_all_weight_on_the_worst_normalised_task():
  losses = LOSSES[:4] + [[0.5, 1.0]]  # normalised: (1.0, 0.5); task 0 is the worst
  weights, _ = _run(weighting.get("stch", mu=0.01, log_losses=False, **SCHEDULE), 2, losses)
  np.testing.assert_allclose(weights[4], [2.0 / NADIR[0], 0.0], atol=1e-6)


def test_a_task_without_labels_gets_weight_zero_and_stays_out_of_the_nadir():
  counts = [[8, 8], [8, 8], [8, 0], [8, 8], [8, 8], [8, 0]]
  losses = [[l0, l1 if c[1] else 0.0] for (l0, l1), c in zip(LOSSES, counts)]
  weights, state = _run(weighting.get("stch", log_losses=True, **SCHEDULE), 2, losses, counts)
  assert np.isfinite(weights).all()
  assert weights[2][1] == 0.0 and weights[5][1] == 0.0
  np.testing.assert_allclose(state.nadir, [NADIR[0], 1.0], rtol=1e-6)  # task 1: step 3 only
  np.testing.assert_array_equal(state.nadir_count, [2, 1])
  # Step 5 with task 0 alone: softmax over one task is 1, T = 1, w_0 = 1 / L_0.
  np.testing.assert_allclose(weights[5][0], 1.0 / 0.1, rtol=1e-5)


def test_a_task_without_labels_in_the_whole_nadir_window_keeps_nadir_one():
  counts = [[8, 8], [8, 8], [8, 0], [8, 0], [8, 8]]
  losses = [[l0, l1 if c[1] else 0.0] for (l0, l1), c in zip(LOSSES, counts)]
  weights, state = _run(weighting.get("stch", **SCHEDULE), 2, losses, counts)
  np.testing.assert_allclose(state.nadir, [NADIR[0], 1.0], rtol=1e-6)
  assert np.isfinite(weights).all()


def test_warmup_defaults_come_from_steps_per_epoch():
  state = weighting.get("stch", context={"steps_per_epoch": 9}).init(3)
  assert (int(state.warmup_steps), int(state.nadir_steps), float(state.mu)) == (36, 9, 1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "steps_per_epoch"),
    ({"mu": 0.0, **SCHEDULE}, "mu > 0"),
    ({"warmup_steps": 0, "nadir_steps": 0}, "nadir_steps >= 1"),
])
def test_bad_hyperparameters_are_value_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    weighting.get("stch", **kwargs)
