"""Uncertainty weighting (Kendall et al., CVPR 2018): objective, weights, the s update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import uncertainty

KINDS = ("classification", "regression")


def _run(method, kinds, losses_per_step, counts_per_step=None):
  """The weights of every step and the final state."""
  state = method.init(kinds)
  weights = []
  for i, losses in enumerate(losses_per_step):
    counts = None if counts_per_step is None else counts_per_step[i]
    w, state = method.update(state, weighting.make_inputs(losses, counts, step=i))
    weights.append(np.asarray(w))
  return np.asarray(weights), state


def _paper_objective(s, losses):
  """Eq. 10 (classification) + Eq. 7 (regression), written out for task order KINDS."""
  return (jnp.exp(-s[0]) * losses[0] + s[0] / 2) + (jnp.exp(-s[1]) * losses[1] / 2 + s[1] / 2)


def test_paper_form_weights_and_sgd_step_by_hand():
  """s=0: weights exp(0)=1 and exp(0)/2; s <- s - lr (-a exp(-s) L + 1/2)."""
  method = weighting.get("uncertainty", optimizer=optax.sgd(0.1))
  weights, state = _run(method, KINDS, [[2.0, 3.0], [2.0, 3.0]])
  np.testing.assert_allclose(weights[0], [1.0, 0.5])
  # step 0: grad = [-2 + 0.5, -3/2 + 0.5] = [-1.5, -1.0]  ->  s = [0.15, 0.10]
  s1 = np.array([0.15, 0.10])
  np.testing.assert_allclose(weights[1], [np.exp(-s1[0]), np.exp(-s1[1]) / 2], rtol=1e-6)
  grad = np.array([-np.exp(-s1[0]) * 2.0 + 0.5, -np.exp(-s1[1]) * 3.0 / 2 + 0.5])
  np.testing.assert_allclose(state.log_variance, s1 - 0.1 * grad, rtol=1e-6)


def test_simple_form_is_exp_minus_s_loss_plus_s_for_every_kind():
  method = weighting.get("uncertainty", form="simple", optimizer=optax.sgd(0.1))
  weights, state = _run(method, KINDS, [[2.0, 3.0]])
  np.testing.assert_allclose(weights[0], [1.0, 1.0])
  # grad = -exp(-s) L + 1 = [-1, -2]  ->  s = [0.1, 0.2]
  np.testing.assert_allclose(state.log_variance, [0.1, 0.2], rtol=1e-6)


def test_a_binary_task_takes_the_classification_form():
  """Eq. 10 (a likelihood over classes) for binary as for classification; Eq. 7 only for the
  error kinds (regression)."""
  weights, _ = _run(weighting.get("uncertainty"), ("binary", "regression", "classification"),
                    [[2.0, 3.0, 4.0]])
  np.testing.assert_allclose(weights[0], [1.0, 0.5, 1.0])


def test_weights_are_the_objective_gradient_with_respect_to_the_losses():
  method = weighting.get("uncertainty", init_log_variance=0.3, optimizer=optax.sgd(0.0))
  weights, _ = _run(method, KINDS, [[2.0, 3.0]])
  s = jnp.full((2,), 0.3)
  np.testing.assert_allclose(weights[0], jax.grad(_paper_objective, 1)(s, jnp.array([2., 3.])),
                             rtol=1e-6)


@pytest.mark.parametrize("tx", [optax.sgd(0.05), optax.adam(0.01)], ids=["sgd", "adam"])
def test_s_update_is_one_optimizer_step_on_the_objective_gradient(tx):
  method = weighting.get("uncertainty", optimizer=tx)
  losses = jnp.array([2.0, 3.0])
  weights, state = _run(method, KINDS, [losses] * 3)
  s, opt_state = jnp.zeros(2), tx.init(jnp.zeros(2))
  for w in weights:
    np.testing.assert_allclose(w, [jnp.exp(-s[0]), jnp.exp(-s[1]) / 2], rtol=1e-6)
    updates, opt_state = tx.update(jax.grad(_paper_objective)(s, losses), opt_state, s)
    s = optax.apply_updates(s, updates)
  np.testing.assert_allclose(state.log_variance, s, rtol=1e-6)


@pytest.mark.parametrize("form, expected", [("paper", lambda l: 1 / (2 * l)),
                                            ("simple", lambda l: 1 / l)])
def test_at_the_optimum_of_s_the_weights_are_one_over_2l_or_one_over_l(form, expected):
  method = weighting.get("uncertainty", form=form, optimizer=optax.sgd(0.5))
  losses = [0.8, 4.0]
  weights, _ = _run(method, KINDS, [losses] * 300)
  np.testing.assert_allclose(weights[-1], expected(np.array(losses)), rtol=1e-4)


def test_a_task_without_labels_keeps_its_s_and_its_adam_state():
  method = weighting.get("uncertainty", optimizer=optax.adam(0.1))
  _, before = _run(method, KINDS, [[2.0, 3.0]] * 3)
  state = before
  for _ in range(3):  # momentum would move s[1] on a zero gradient; it must not
    w, state = method.update(state, weighting.make_inputs([1.0, 0.0], counts=[8, 0]))
    assert np.isfinite(w).all() and w[1] == 0.0 and w[0] > 0
  assert state.log_variance[1] == before.log_variance[1]
  assert state.log_variance[0] != before.log_variance[0]
  mu, nu = state.opt_state[0].mu, state.opt_state[0].nu
  assert mu[1] == before.opt_state[0].mu[1] and nu[1] == before.opt_state[0].nu[1]


def test_without_a_run_optimizer_s_uses_adam_at_1e_3():
  _, state = _run(uncertainty.make(), KINDS, [[2.0, 3.0]])
  np.testing.assert_allclose(state.log_variance, [1e-3, 1e-3], rtol=1e-4)  # Adam's first step


def test_adaptive_is_an_alias():
  assert weighting.REGISTRY["adaptive"] is weighting.REGISTRY["uncertainty"]


def test_an_unknown_form_is_a_value_error():
  with pytest.raises(ValueError, match="form"):
    weighting.get("uncertainty", form="log")
