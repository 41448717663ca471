"""Dynamic weight average (Liu et al., CVPR 2019): softmax of the last two windows' loss ratios."""

import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import dwa


def _run(method, num_tasks, losses_per_step, counts_per_step=None):
  state = method.init(num_tasks)
  weights = []
  for i, losses in enumerate(losses_per_step):
    counts = None if counts_per_step is None else counts_per_step[i]
    w, state = method.update(state, weighting.make_inputs(losses, counts, step=i))
    weights.append(np.asarray(w))
  return np.asarray(weights), state


def _dwa(ratios, temperature=2.0):
  e = np.exp(np.asarray(ratios) / temperature)
  return len(ratios) * e / e.sum()


# Windows of 2 steps: averages (3, 2), then (2, 1.5), then (1, 1.2).
LOSSES = [[4.0, 2.0], [2.0, 2.0], [3.0, 1.0], [1.0, 2.0], [1.0, 1.0], [1.0, 1.4], [9.0, 9.0]]


def test_equal_weights_until_two_windows_then_the_ratio_softmax():
  weights, _ = _run(weighting.get("dwa", window=2), 2, LOSSES)
  np.testing.assert_array_equal(weights[:4], np.ones((4, 2)))
  r = np.array([2.0 / 3.0, 1.5 / 2.0])  # L(t-1) / L(t-2) after windows 1 and 2
  np.testing.assert_allclose(weights[4], _dwa(r), rtol=1e-6)
  np.testing.assert_allclose(weights[5], _dwa(r), rtol=1e-6)  # fixed within a window
  r = np.array([1.0 / 2.0, 1.2 / 1.5])  # after window 3
  np.testing.assert_allclose(weights[6], _dwa(r), rtol=1e-6)
  np.testing.assert_allclose(weights.sum(1), 2.0, rtol=1e-6)


def test_temperature_flattens_the_weights():
  weights, _ = _run(weighting.get("dwa", window=2, temperature=10.0), 2, LOSSES[:5])
  np.testing.assert_allclose(weights[4], _dwa([2.0 / 3.0, 1.5 / 2.0], 10.0), rtol=1e-6)


def test_window_defaults_to_the_runs_steps_per_epoch():
  weights, _ = _run(weighting.get("dwa", context={"steps_per_epoch": 2}), 2, LOSSES[:5])
  np.testing.assert_allclose(weights[4], _dwa([2.0 / 3.0, 1.5 / 2.0]), rtol=1e-6)
  _, state = _run(weighting.get("dwa"), 1, [[1.0]] * (dwa.DEFAULT_WINDOW - 1))
  assert int(state.windows) == 0 and int(state.window_steps) == dwa.DEFAULT_WINDOW - 1


def test_window_averages_count_only_labelled_steps():
  losses = [[4.0, 2.0], [2.0, 0.0], [3.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
  counts = [[8, 8], [8, 0], [8, 0], [8, 8], [8, 8]]
  weights, state = _run(weighting.get("dwa", window=2), 2, losses, counts)
  np.testing.assert_allclose(state.previous_average, [3.0, 2.0])  # task 1: (2) / 1 step
  np.testing.assert_allclose(state.last_average, [2.0, 1.0])      # task 1: (1) / 1 step
  np.testing.assert_allclose(weights[4], _dwa([2.0 / 3.0, 1.0 / 2.0]), rtol=1e-6)


def test_a_task_without_labels_for_a_whole_window_keeps_its_average_and_no_nan():
  losses = [[4.0, 0.0], [2.0, 0.0], [3.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
  counts = [[8, 0]] * 5
  weights, state = _run(weighting.get("dwa", window=2), 2, losses, counts)
  assert np.isfinite(weights).all()
  np.testing.assert_array_equal(state.last_average[1], 0.0)
  # 0/0 -> ratio 1 in the softmax; the unlabelled task's own weight is 0
  np.testing.assert_allclose(weights[4, 0], _dwa([2.0 / 3.0, 1.0])[0], rtol=1e-6)
  np.testing.assert_array_equal(weights[:, 1], 0.0)


def test_a_task_without_labels_in_the_batch_gets_weight_zero_the_others_theirs():
  losses = [[4.0, 2.0], [2.0, 2.0], [3.0, 1.0], [1.0, 2.0], [1.0, 0.0]]
  counts = [[8, 8]] * 4 + [[8, 0]]
  weights, _ = _run(weighting.get("dwa", window=2), 2, losses, counts)
  np.testing.assert_allclose(weights[4], [_dwa([2.0 / 3.0, 1.5 / 2.0])[0], 0.0], rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"window": 0}, {"window": 1.5}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match=next(iter(kwargs))):
    weighting.get("dwa", **kwargs)
