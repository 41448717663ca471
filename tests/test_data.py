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


# ----------------------------------------------------------------------------------------------
# Kinds and losses through from_arrays.


def _attributes(n=400, num_tasks=40, missing=0.3, seed=0):
  """A CelebA-style table: 40 attributes, each a linear threshold of x, 30% of cells missing;
  half of the columns 0/1 floats with NaN, half bools with None (as pandas reads them)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 8)).astype(np.float32)
  truth = x @ rng.normal(size=(8, num_tasks)) > 0
  columns = {}
  for i in range(num_tasks):
    blank = rng.random(n) < missing
    if i % 2:
      columns[f"attr{i}"] = np.where(blank, np.nan, truth[:, i].astype(float))
    else:
      columns[f"attr{i}"] = np.array([None if b else bool(t) for b, t in
                                      zip(blank, truth[:, i])], dtype=object)
  return x, columns, truth


def test_forty_binary_tasks_with_missing_cells_are_as_easy_as_three():
  x, columns, truth = _attributes()
  ds = data.from_arrays(x, columns, task_types="binary", val_fraction=0.0, test_fraction=0.0)
  assert len(ds.tasks) == 40 and {t.kind for t in ds.tasks} == {"binary"}
  assert ds.tasks[0].classes == (False, True) and ds.tasks[1].classes == (0, 1)
  for i, task in enumerate(ds.tasks):
    y = ds.train.labels[task.name]
    assert y.dtype == np.int32
    present = y >= 0
    assert present.mean() == pytest.approx(0.7, abs=0.08)
    np.testing.assert_array_equal(y[present], truth[present, i])
  assert [t.name for t in data.from_arrays(x, columns, task_types={
      n: "binary" for n in columns}).tasks] == list(columns)


def test_forty_binary_heads_learn_and_report_a_per_task_accuracy():
  """The losses and metrics of 40 masked binary tasks train a linear model (no train.py)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from mtl_jax import losses, metrics  # pylint: disable=import-outside-toplevel

  x, columns, _ = _attributes()
  ds = data.from_arrays(x, columns, task_types="binary", val_fraction=0.0, test_fraction=0.25)

  def outputs(w, inputs):
    logits = inputs @ w
    return {t.name: logits[:, i:i + 1] for i, t in enumerate(ds.tasks)}

  @jax.jit
  def step(w):
    grad = jax.grad(lambda w: losses.task_losses(
        ds.tasks, outputs(w, ds.train.inputs), ds.train.labels)[0].sum())(w)
    return w - 2.0 * grad

  w = jnp.zeros((8, 40))
  for _ in range(30):
    w = step(w)
  result = metrics.compute(losses.task_metrics(ds.tasks, outputs(w, ds.test.inputs),
                                               ds.test.labels), "test")
  accuracies = [result[f"test/{t.name}/accuracy"] for t in ds.tasks]
  assert len(accuracies) == 40 and min(accuracies) > 0.8
  assert all(0.9 < result[f"test/{t.name}/auc"] <= 1.0 for t in ds.tasks)


def test_task_losses_by_name_or_callable_through_from_arrays():
  def quartic(outputs, labels, mask):
    del mask
    return (outputs - labels) ** 4

  x = np.zeros((10, 2), np.float32)
  y = np.arange(10.0)
  ds = data.from_arrays(x, {"y": y, "z": y, "w": y},
                        task_types={"y": "regression", "z": "regression", "w": "regression"},
                        task_losses={"y": "huber", "z": quartic})
  assert [t.loss for t in ds.tasks] == ["huber", quartic, "mse"]


def test_element_wise_labels_through_from_arrays_and_blanking():
  x = np.zeros((20, 2), np.float32)
  maps = np.random.default_rng(0).random((20, 3, 4))
  maps[0, 1, 2] = np.nan
  ds = data.from_arrays(x, {"depth": maps}, task_types={"depth": "regression"},
                        val_fraction=0.0, test_fraction=0.0)
  task, = ds.tasks
  assert task.label_shape == (3, 4) and ds.train.labels["depth"].shape == (20, 3, 4)
  assert np.isnan(ds.train.labels["depth"][0, 1, 2])
  blanked = ds.blank_train_labels(0.5, seed=0).train.labels["depth"]
  whole = np.isnan(blanked).reshape(20, -1)
  assert whole.all(axis=1).sum() == 10  # half the examples blanked in full
  assert (whole.any(axis=1) == whole.all(axis=1)).sum() == 19  # the rest as they were


def test_blanking_binary_labels_marks_them_minus_one():
  ds = data.from_arrays(np.zeros((10, 1)), {"b": [0, 1] * 5}, task_types="binary",
                        val_fraction=0.0, test_fraction=0.0)
  y = ds.blank_train_labels(0.4, seed=1).train.labels["b"]
  assert (y == -1).sum() == 4 and y.dtype == np.int32


@pytest.mark.parametrize("kwargs, message", [
    (dict(task_types={"a": "ordinal"}), r"task_types\['a'\] must be one of \['binary'"),
    (dict(task_types="binary"), r"task 'b' is binary but has 3 distinct label\(s\)"),
    (dict(task_types={"c": "regression"}), "task 'c' is a regression task but has non-numeric"),
    (dict(task_types={"a": "regression"}, task_losses={"a": "hinge"}),
     "task 'a': unknown loss 'hinge' for a regression task"),
    (dict(task_losses={"zz": "mse"}), r"task_losses names tasks without labels: \['zz'\]"),
])
def test_bad_kinds_and_losses_raise_value_errors_naming_the_task(kwargs, message):
  labels = {"a": [0, 1, 0, 1], "b": [0, 1, 2, None], "c": ["x", "y", "x", "y"]}
  with pytest.raises(ValueError, match=message):
    data.from_arrays(np.zeros((4, 1)), labels, **kwargs)
