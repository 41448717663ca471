"""UW-SO (Kirchdorfer et al., GCPR 2024): w = softmax((1 / L) / T) over the labelled tasks."""

import numpy as np
import pytest

from mtl_jax import weighting


def _weights(losses, counts=None, **kwargs):
  method = weighting.get("uw_so", **kwargs)
  w, _ = method.update(method.init(len(losses)), weighting.make_inputs(losses, counts))
  return np.asarray(w, np.float64)


def _softmax(x):
  e = np.exp(x - np.max(x))
  return e / e.sum()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("losses", [[0.3, 1.7], [2.0, 0.5, 0.9, 3.0], [1.5, 40.0, 7.0]])
def test_weights_are_the_softmax_of_inverse_losses_over_the_temperature(losses, temperature):
  losses = np.asarray(losses)
  w = _weights(losses, temperature=temperature)
  np.testing.assert_allclose(w, _softmax(1.0 / (losses + 1e-8) / temperature), rtol=1e-5)
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)


def test_a_smaller_loss_gets_a_larger_weight():
  w = _weights([0.4, 2.0, 0.9, 5.0])
  assert list(np.argsort(-w)) == [0, 2, 1, 3]


def test_the_temperature_moves_between_one_hot_on_the_smallest_loss_and_uniform():
  losses = [0.5, 1.0, 2.0]
  np.testing.assert_allclose(_weights(losses, temperature=1e-3), [1.0, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(_weights(losses, temperature=1e4), [1 / 3] * 3, rtol=1e-3)


def test_a_task_without_labels_gets_weight_zero_and_the_others_sum_to_one():
  w = _weights([0.5, 0.0, 2.0], counts=[4, 0, 4], temperature=1.0)
  labelled = _softmax(np.array([1 / 0.5, 1 / 2.0]))  # the softmax over tasks 0 and 2 only
  np.testing.assert_allclose(w, [labelled[0], 0.0, labelled[1]], rtol=1e-5)
  np.testing.assert_array_equal(_weights([0.0, 0.0], counts=[0, 0]), [0.0, 0.0])


def test_a_zero_loss_takes_all_the_weight_and_stays_finite():
  np.testing.assert_allclose(_weights([0.0, 1.0, 2.0]), [1.0, 0.0, 0.0], atol=1e-7)


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"temperature": -1.0}, {"eps": 0.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="uw_so"):
    weighting.get("uw_so", **kwargs)
