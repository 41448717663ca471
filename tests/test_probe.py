"""The linear probe: held-out accuracy of a logistic regression on a representation."""

import numpy as np

from mtl_jax import probe


def test_every_third_example_is_held_out():
  np.testing.assert_array_equal(probe.held_out(7), [1, 0, 0, 1, 0, 0, 1])


def test_linearly_separable_features_give_accuracy_one_and_noise_about_chance():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 300)
  separable = np.eye(3)[labels] * 5 + rng.normal(size=(300, 3))
  assert probe.probe_accuracy(separable, labels) == 1.0
  noise = rng.normal(size=(300, 3))
  assert abs(probe.probe_accuracy(noise, labels) - 1 / 3) < 0.15


def test_labels_whose_training_part_has_one_class_cannot_be_probed():
  assert probe.check_labels(np.array([0, 1, 1, 0, 1, 1])) is not None
  assert probe.check_labels(np.array([0, 0, 1, 1, 0, 1])) is None
