"""The built-in `mnist` dataset (read from an .npz) and configs/mnist.py, on a tiny generated file.

MNIST without a path (TFDS `mnist`) is in test_tfds.py.
"""

import importlib.util
import os

import ml_collections
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import config as config_lib
from mtl_jax import data as data_lib
from mtl_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_TEST = 96, 24


def _write_npz(path, drop=None, **overrides):
  rng = np.random.default_rng(0)
  arrays = {"train_images": rng.integers(0, 256, (NUM_TRAIN, 28, 28), dtype=np.uint8),
            "train_labels": np.arange(NUM_TRAIN, dtype=np.uint8) % 10,
            "test_images": rng.integers(0, 256, (NUM_TEST, 28, 28), dtype=np.uint8),
            "test_labels": np.arange(NUM_TEST, dtype=np.uint8) % 10}
  arrays.update(overrides)
  arrays.pop(drop, None)
  np.savez_compressed(path, **arrays)
  return str(path)


def _dataset_config(path, **overrides):
  c = config_lib.default_config().dataset
  c.name, c.path = "mnist", str(path)
  c.update(overrides)
  return c


def test_images_tasks_and_a_deterministic_validation_split(tmp_path):
  path = _write_npz(tmp_path / "m.npz")
  data = data_lib.load(_dataset_config(path))
  assert data.task_names == ("digit", "parity")
  assert [len(t.classes) for t in data.tasks] == [10, 2]
  n_val = round(NUM_TRAIN / 12)
  assert len(data.train) == NUM_TRAIN - n_val and len(data.val) == n_val
  assert len(data.test) == NUM_TEST
  assert data.train.inputs.shape[1:] == (28, 28, 1) and data.train.inputs.dtype == np.float32
  assert 0.0 <= data.train.inputs.min() and data.train.inputs.max() <= 1.0
  with np.load(path) as f:  # the test split is the file's, in order
    np.testing.assert_allclose(data.test.inputs[..., 0], f["test_images"] / 255.0, rtol=1e-6)
  again, other = data_lib.load(_dataset_config(path)), data_lib.load(
      _dataset_config(path, split_seed=1))
  np.testing.assert_array_equal(again.val.inputs, data.val.inputs)
  assert not np.array_equal(other.val.inputs, data.val.inputs)
  # Validation rows are training images, none of them also in the training split.
  train_rows = {x.tobytes() for x in data.train.inputs}
  assert not any(x.tobytes() in train_rows for x in data.val.inputs)


def test_flatten_and_normalize(tmp_path):
  path = _write_npz(tmp_path / "m.npz")
  plain = data_lib.load(_dataset_config(path))
  flat = data_lib.load(_dataset_config(path, flatten=True, normalize=(0.1307, 0.3081)))
  assert flat.train.inputs.shape == (len(plain.train), 784)
  np.testing.assert_allclose(flat.train.inputs,
                             (plain.train.inputs.reshape(-1, 784) - 0.1307) / 0.3081, rtol=1e-5)
  with pytest.raises(ConfigError, match="config.dataset.normalize"):
    data_lib.load(_dataset_config(path, normalize=(0.1, 0.0)))


@pytest.mark.parametrize("case, message", [
    ("no_file", "no such file"),
    ("no_key", "lacks the key(s) ['test_labels']"),
    ("not_npz", "cannot read"),
    ("bad_shape", "train_images"),
])
def test_mistakes_are_one_config_error_naming_them(tmp_path, case, message):
  path = {"no_file": str(tmp_path / "absent.npz"),
          "no_key": _write_npz(tmp_path / "k.npz", drop="test_labels"),
          "bad_shape": _write_npz(tmp_path / "s.npz",
                                  train_images=np.zeros((NUM_TRAIN, 28, 27), np.uint8))}.get(case)
  if case == "not_npz":
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
  with pytest.raises(ConfigError) as error:
    data_lib.load(_dataset_config(path))
  assert message in str(error.value)
  assert "\n" not in str(error.value)


def _mnist_config(arg=None):
  spec = importlib.util.spec_from_file_location("mnist_config",
                                                os.path.join(REPO, "configs", "mnist.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_the_config_is_the_course_notebook_workload():
  config = config_lib.complete(_mnist_config())
  config_lib.validate(config, num_devices=1)
  assert config.dataset.name == "mnist" and config.dataset.path == ""
  assert config.dataset.flatten and tuple(config.dataset.normalize) == (0.1307, 0.3081)
  assert (tuple(config.model.backbone), tuple(config.model.shared_layers),
          tuple(config.model.task_layers)) == ((100,), (), ())
  assert tuple(config.task_weights) == (1.0, 0.5)
  assert config_lib.weighting_name(config) == "manual"
  o = config.optimizer
  assert (o.name, o.learning_rate, o.momentum, o.nesterov, o.weight_decay, o.schedule) == (
      "sgd", 1e-3, 0.9, True, 1e-4, "constant")
  assert (config.batch_size, config.num_epochs) == (128, 10)


def test_twenty_steps_on_a_tiny_file(tmp_path):
  config = _mnist_config()
  config.dataset.path = _write_npz(tmp_path / "m.npz")
  config.num_epochs = 0
  config.batch_size = config.eval_batch_size = 16
  config.num_steps = config.log_every = config.eval_every = config.checkpoint_every = 20
  config.steps_per_dispatch = 20
  final = mj.train_and_evaluate(ml_collections.ConfigDict(config), str(tmp_path / "w"))
  for task in ("digit", "parity"):
    assert 0.0 <= final[f"test/{task}/accuracy"] <= 1.0, final
