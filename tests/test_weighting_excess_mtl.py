"""ExcessMTL (He et al., ICML 2024): w_i <- w_i exp(eta e_i / e_i(0)), e = g^T diag(A^-1/2) g."""

import jax
import numpy as np
import pytest

from mtl_jax import weighting

J = np.array([[1.0, 0.0, 2.0], [0.0, 2.0, -1.0], [0.5, 0.5, 0.0]], np.float32)
LOSSES = np.ones(3, np.float32)


def _excess_mtl_by_hand(grads_per_step, eta, diagonal=True):
  """The weights after each update (the official code's loop)."""
  num_tasks = grads_per_step[0].shape[0]
  w, sums, initial, history = np.ones(num_tasks), 0.0, None, []
  for grads in grads_per_step:
    if diagonal:
      sums = sums + grads**2
      excess = (grads**2 / np.sqrt(sums + 1e-7)).sum(1)
    else:
      sums = sums + (grads**2).sum(1)
      excess = (grads**2).sum(1) / np.sqrt(sums + 1e-7)
    if initial is None:
      initial = excess
    else:
      w = w * np.exp(eta * excess / initial)
      w = w / w.sum() * num_tasks
    history.append(w)
  return np.asarray(history)


def _run(method, grads_per_step, counts=None, grads_like=J):
  state = method.init(grads_per_step[0].shape[0], grads_like=grads_like)
  weights = []
  for grads in grads_per_step:
    losses = np.ones(grads.shape[0], np.float32)
    w, state = method.update(state, weighting.make_inputs(losses, counts, grads=grads))
    weights.append(np.asarray(w))
  return np.asarray(weights), state


STEPS = [J, J * 0.5, J * np.array([[1.0], [0.2], [0.6]], np.float32), J * 0.3]


def test_the_diagonal_estimate_needs_the_gradients_the_scalar_one_the_gram_matrix():
  assert weighting.get("excess_mtl").needs == "grads"
  assert weighting.get("excess_mtl", hessian="scalar").needs == "gram"
  assert weighting.get("excess_mtl").allows_rep


@pytest.mark.parametrize("hessian", ["diagonal", "scalar"])
def test_weights_follow_the_exponentiated_excess_risk_steps_worked_by_hand(hessian):
  method = weighting.get("excess_mtl", robust_step_size=0.5, hessian=hessian)
  weights, state = _run(method, STEPS)
  expected = _excess_mtl_by_hand(STEPS, 0.5, diagonal=hessian == "diagonal")
  np.testing.assert_array_equal(weights[0], [1.0, 1.0, 1.0])  # the first update sets e(0)
  np.testing.assert_allclose(weights, expected, rtol=1e-5)
  np.testing.assert_allclose(state.weights.sum(), 3.0, rtol=1e-6)


def test_a_task_further_from_convergence_gains_weight():
  # Task 0's gradient stays put; task 1's shrinks as if it converged.
  steps = [np.array([[1.0, 0.0], [0.0, 1.0]], np.float32) * [[1.0], [0.5**k]] for k in range(6)]
  weights, _ = _run(weighting.get("excess_mtl", robust_step_size=1.0), steps,
                    grads_like=steps[0])
  assert weights[-1][0] > 1.0 > weights[-1][1]
  assert (np.diff(weights[:, 0]) >= 0).all()


def test_a_task_without_labels_gets_weight_zero_and_keeps_its_state():
  method = weighting.get("excess_mtl", robust_step_size=0.5)
  _, state = _run(method, STEPS[:2])
  grads = STEPS[2].copy()
  grads[1] = 0.0
  w, after = method.update(state, weighting.make_inputs(LOSSES, [4, 0, 4], grads=grads))
  w = np.asarray(w)
  assert np.isfinite(w).all() and w[1] == 0.0
  assert after.weights[1] == state.weights[1]
  np.testing.assert_array_equal(after.squared_sums[1], state.squared_sums[1])
  np.testing.assert_allclose(after.weights.sum(), 3.0, rtol=1e-6)


def test_a_task_first_labelled_later_sets_its_initial_estimate_then():
  method = weighting.get("excess_mtl")
  first = J.copy()
  first[2] = 0.0
  _, state = _run(method, [first], counts=[4, 4, 0])
  assert list(np.asarray(state.has_initial)) == [True, True, False]
  _, state = method.update(state, weighting.make_inputs(LOSSES, grads=J))
  np.testing.assert_allclose(state.initial_excess[2], np.sum(J[2]**2 / np.sqrt(J[2]**2 + 1e-7)),
                             rtol=1e-6)


@pytest.mark.parametrize("grads", [
    [[1.0, 2.0], [0.0, 0.0]],    # a zero gradient
    [[1.0, 2.0], [2.0, 4.0]],    # parallel
    [[1.0, 2.0], [-1.0, -2.0]],  # exactly opposite
])
@pytest.mark.parametrize("hessian", ["diagonal", "scalar"])
def test_degenerate_gradients_give_finite_weights(grads, hessian):
  grads = np.asarray(grads, np.float32)
  method = weighting.get("excess_mtl", robust_step_size=1.0, hessian=hessian)
  weights, state = _run(method, [grads] * 4, grads_like=grads)
  assert np.isfinite(weights).all() and (weights >= 0).all()
  np.testing.assert_allclose(state.weights.sum(), 2.0, rtol=1e-6)


def test_a_huge_step_size_does_not_overflow():
  weights, _ = _run(weighting.get("excess_mtl", robust_step_size=1e6), STEPS)
  assert np.isfinite(weights).all()
  np.testing.assert_allclose(weights[-1].sum(), 3.0, rtol=1e-6)


def test_without_gradient_buffers_the_diagonal_estimate_says_how_to_build_the_state():
  method = weighting.get("excess_mtl")
  with pytest.raises(ValueError, match="grads_like"):
    method.update(method.init(3), weighting.make_inputs(LOSSES, grads=J))


def test_jit_equals_eager_with_the_scalar_hessian():
  """The default ("diagonal") is checked with every method in test_weighting_properties.py."""
  method = weighting.get("excess_mtl", robust_step_size=0.5, hessian="scalar")
  state = method.init(3, grads_like=J)
  for grads in STEPS[:3]:
    inputs = weighting.make_inputs(LOSSES, grads=grads)
    (w_eager, s_eager), (w_jit, s_jit) = method.update(state, inputs), jax.jit(
        method.update)(state, inputs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                 (w_jit, s_jit), (w_eager, s_eager))
    state = s_eager


@pytest.mark.parametrize("kwargs", [{"robust_step_size": 0.0}, {"hessian": "full"}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="excess_mtl"):
    weighting.get("excess_mtl", **kwargs)
