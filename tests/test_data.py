"""Built-in datasets, label encoding, partial labels and the data order."""

import numpy as np
import pytest

from mtl_jax import data, tasks
from mtl_jax.config import default_config


def _digits(**overrides):
  config = default_config().dataset
  config.update(overrides)
  return data.load(config)


def test_digits_has_three_tasks_and_a_deterministic_split():
  first, second = _digits(), _digits()
  assert first.task_names == ("digit", "parity", "high")
  assert [t.output_size for t in first.tasks] == [10, 2, 2]
  assert len(first.train) + len(first.val) + len(first.test) == 1797
  np.testing.assert_array_equal(first.test.inputs, second.test.inputs)
  assert first.train.inputs.max() <= 1.0
  digit, parity = first.train.labels["digit"], first.train.labels["parity"]
  np.testing.assert_array_equal(parity, digit % 2)  # classes ("even", "odd")


def test_another_split_seed_gives_another_split():
  assert not np.array_equal(_digits().test.inputs, _digits(split_seed=1).test.inputs)


def test_missing_fraction_blanks_that_fraction_of_each_training_task_only():
  full, partial = _digits(), _digits(missing_fraction=0.4)
  for task in partial.tasks:
    missing = tasks.is_missing(task, partial.train.labels[task.name])
    assert missing.mean() == pytest.approx(0.4, abs=0.002)
    kept = ~missing
    np.testing.assert_array_equal(partial.train.labels[task.name][kept],
                                  full.train.labels[task.name][kept])
    assert not tasks.is_missing(task, partial.test.labels[task.name]).any()


def test_from_arrays_encodes_missing_labels_and_regression_targets():
  inputs = np.arange(20, dtype=np.float32).reshape(10, 2)
  labels = {"color": ["red", None, "blue", "red", np.nan, "blue", "red", "red", "blue", "red"],
            "size": [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0, np.nan, 9.0, 10.0]}
  ds = data.from_arrays(inputs, labels, task_types={"size": "regression"},
                        val_fraction=0.0, test_fraction=0.0)
  color, size = ds.tasks
  assert color.classes == ("blue", "red") and size.kind == "regression"
  np.testing.assert_array_equal(ds.train.labels["color"], [1, -1, 0, 1, -1, 0, 1, 1, 0, 1])
  assert np.isnan(ds.train.labels["size"][[2, 7]]).all()


def test_from_arrays_names_a_length_mismatch():
  with pytest.raises(ValueError, match="task 'b' has 3 labels for 4 inputs"):
    data.from_arrays(np.zeros((4, 2)), {"a": [0, 1, 0, 1], "b": [0, 1, 0]})


def test_data_order_is_a_function_of_seed_and_step():
  sampler = data.Sampler(num_examples=100, batch_size=32, seed=3)
  all_steps = sampler.indices(range(10))
  np.testing.assert_array_equal(sampler.indices([7, 8]), all_steps[7:9])
  epoch = all_steps[:3].ravel()
  assert len(set(epoch)) == 96  # one epoch: no repeats
  assert not np.array_equal(all_steps[:3], all_steps[3:6])  # each epoch reshuffles
  other = data.Sampler(num_examples=100, batch_size=32, seed=4).indices(range(3))
  assert not np.array_equal(other, all_steps[:3])


def test_host_pipeline_yields_the_sampler_batches_stacked_per_chunk():
  split = data.Split(np.arange(40, dtype=np.float32)[:, None], {"t": np.arange(40) % 3})
  sampler = data.Sampler(40, 8, seed=0)
  chunks = [(0, 3), (3, 2)]
  batches = list(data.host_batches(split, sampler, chunks))
  assert [b["inputs"].shape for b in batches] == [(3, 8, 1), (2, 8, 1)]
  np.testing.assert_array_equal(batches[1]["inputs"][..., 0], sampler.indices([3, 4]))
