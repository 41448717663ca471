"""The data order: balanced probabilities, balanced resampling, determinism by (seed, epoch)."""

import numpy as np
import pytest

from mtl_jax import data
from mtl_jax.data import sampling
from mtl_jax.tasks import Task


def test_balanced_probabilities_on_a_hand_example():
  # Task a labelled on rows 0, 1 of 4; task b on rows 0-3; row 4 unlabelled. T = 2:
  # p = [1/(2*2) + 1/(4*2), same, 1/(4*2), 1/(4*2), 0] = [3/8, 3/8, 1/8, 1/8, 0].
  labelled = {"a": np.array([1, 1, 0, 0, 0], bool), "b": np.array([1, 1, 1, 1, 0], bool)}
  np.testing.assert_allclose(data.balanced_probabilities(labelled),
                             [3 / 8, 3 / 8, 1 / 8, 1 / 8, 0.0])


def test_a_task_without_labels_contributes_nothing():
  labelled = {"a": np.array([1, 0, 0, 1], bool), "b": np.zeros(4, bool)}
  np.testing.assert_allclose(data.balanced_probabilities(labelled), [0.5, 0, 0, 0.5])


def test_balanced_probabilities_need_some_label():
  with pytest.raises(ValueError, match="no example has a label"):
    data.balanced_probabilities({"a": np.zeros(3, bool)})


def test_labelled_masks_read_missing_labels_of_both_kinds():
  tasks = [Task("c", classes=("x", "y")), Task("r", kind="regression")]
  masks = data.labelled_masks(tasks, {"c": np.array([0, -1, 1], np.int32),
                                      "r": np.array([np.nan, 1.0, 2.0], np.float32)})
  np.testing.assert_array_equal(masks["c"], [True, False, True])
  np.testing.assert_array_equal(masks["r"], [False, True, True])


def test_an_example_is_labelled_if_any_of_its_elements_is():
  tasks = [Task("seg", classes=(0, 1), label_shape=(2,)), Task("b", kind="binary"),
           Task("v", kind="regression", label_shape=(2,))]
  masks = data.labelled_masks(tasks, {
      "seg": np.array([[0, -1], [-1, -1], [1, 1]], np.int32),
      "b": np.array([-1, 0, 1], np.int32),
      "v": np.array([[np.nan, 2.0], [np.nan, np.nan], [1.0, np.nan]], np.float32)})
  np.testing.assert_array_equal(masks["seg"], [True, False, True])
  np.testing.assert_array_equal(masks["b"], [False, True, True])
  np.testing.assert_array_equal(masks["v"], [True, False, True])


def _skewed(n=1000, rare=50):
  """Task a labelled on `rare` rows, task b on all the others (as after joining two datasets)."""
  a = np.zeros(n, bool)
  a[np.random.default_rng(0).choice(n, rare, replace=False)] = True
  return {"a": a, "b": ~a}


def _labelled_counts(sampler, labelled, epochs):
  drawn = sampler.indices(range(epochs * sampler.steps_per_epoch)).ravel()
  return {task: int(mask[drawn].sum()) for task, mask in labelled.items()}


def test_balanced_sampling_gives_each_task_about_the_same_labelled_examples():
  labelled = _skewed()
  balanced = data.Sampler(1000, 50, seed=0,
                          probabilities=data.balanced_probabilities(labelled))
  counts = _labelled_counts(balanced, labelled, epochs=5)
  assert counts["a"] / counts["b"] == pytest.approx(1.0, abs=0.1)
  shuffled = _labelled_counts(data.Sampler(1000, 50, seed=0), labelled, epochs=5)
  assert shuffled == {"a": 250, "b": 4750}  # each example once per epoch


def test_examples_of_probability_zero_are_never_drawn():
  p = np.ones(200)
  p[::3] = 0
  drawn = data.Sampler(200, 20, seed=1, probabilities=p).indices(range(50))
  assert not np.isin(drawn, np.arange(0, 200, 3)).any()


def test_resampling_is_a_function_of_seed_and_epoch():
  p = data.balanced_probabilities(_skewed(200, 20))
  sampler = data.Sampler(200, 32, seed=3, probabilities=p)
  resumed = data.Sampler(200, 32, seed=3, probabilities=p.copy())  # e.g. after a restart
  all_steps = sampler.indices(range(18))
  np.testing.assert_array_equal(resumed.indices(range(7, 18)), all_steps[7:])
  np.testing.assert_array_equal(sampler.epoch_order(1), resumed.epoch_order(1))
  assert not np.array_equal(sampler.epoch_order(0), sampler.epoch_order(1))
  other_seed = data.Sampler(200, 32, seed=4, probabilities=p)
  assert not np.array_equal(other_seed.epoch_order(0), sampler.epoch_order(0))
  assert len(np.unique(sampler.epoch_order(0))) < 200  # with replacement


def test_without_probabilities_each_epoch_is_a_permutation_as_before():
  sampler = data.Sampler(100, 32, seed=3)
  for epoch in range(3):
    np.testing.assert_array_equal(sampler.epoch_order(epoch),
                                  np.random.default_rng([3, epoch]).permutation(100))


def test_probabilities_are_checked_and_normalised():
  sampler = data.Sampler(4, 2, seed=0, probabilities=[1, 1, 2, 0])
  np.testing.assert_allclose(sampler.probabilities, [0.25, 0.25, 0.5, 0])
  with pytest.raises(ValueError, match=r"shape \(3,\); expected \(4,\)"):
    data.Sampler(4, 2, seed=0, probabilities=[1, 1, 1])
  with pytest.raises(ValueError, match="non-negative"):
    data.Sampler(4, 2, seed=0, probabilities=[1, -1, 1, 1])


def test_samplers_with_equal_settings_are_equal_and_hashable():
  p = np.arange(10.0)
  assert data.Sampler(10, 2, 0, p) == data.Sampler(10, 2, 0, p.copy())
  assert data.Sampler(10, 2, 0, p) != data.Sampler(10, 2, 0)
  assert hash(data.Sampler(10, 2, 0, p)) == hash(data.Sampler(10, 2, 0, p.copy()))


def test_sampler_still_lives_in_the_pipeline_module():
  from mtl_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  assert pipeline.Sampler is sampling.Sampler is data.Sampler
