"""The built-in `multi_mnist` dataset (Sener and Koltun, NeurIPS 2018) and
configs/multi_mnist.py, on a tiny generated MNIST-layout file.

Each generated image is blank but for a 4x4 block whose intensity, 100 + i, names image i,
and one pixel at 255 (so no composite is byte-scaled): the block read back at the top left and
at the bottom right of a composite says which two images it was made of.
"""

import importlib.util
import os

import ml_collections
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import config as config_lib
from mtl_jax import data as data_lib
from mtl_jax.data import multi_mnist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_TEST = 48, 20
BLOCK = slice(10, 14)  # the block's rows and columns in a source image
LEFT_AT, RIGHT_AT = 8, 13  # output pixels (i, i) that read the left / right digit's block


def _images(n):
  images = np.zeros((n, 28, 28), np.uint8)
  images[:, BLOCK, BLOCK] = (100 + np.arange(n, dtype=np.uint8))[:, None, None]
  images[:, 27, 0] = 255
  return images


def _write_npz(path):
  rng = np.random.default_rng(0)
  np.savez_compressed(path, train_images=_images(NUM_TRAIN),
                      train_labels=rng.permutation(np.arange(NUM_TRAIN) % 10),
                      test_images=_images(NUM_TEST),
                      test_labels=rng.permutation(np.arange(NUM_TEST) % 10))
  return str(path)


def _dataset_config(path, **overrides):
  c = config_lib.default_config().dataset
  c.name, c.path = "multi_mnist", str(path)
  c.update(overrides)
  return c


def _sources(split):
  """(left image ids, right image ids) [N] of a split's composites, read from their pixels."""
  pixels = np.round(split.inputs[..., 0] * 255).astype(int)
  return pixels[:, LEFT_AT, LEFT_AT] - 100, pixels[:, RIGHT_AT, RIGHT_AT] - 100


def test_the_left_digit_is_drawn_at_the_top_left_the_right_at_the_bottom_right():
  ink = np.full((1, 28, 28), 7, np.uint8)
  blank = np.zeros_like(ink)
  left_only = multi_mnist.canvas(ink, blank)[0]
  right_only = multi_mnist.canvas(blank, ink * 2)[0]
  assert left_only.shape == (36, 36)
  assert np.argwhere(left_only).min(0).tolist() == [0, 0]
  assert np.argwhere(left_only).max(0).tolist() == [27, 27]
  assert np.argwhere(right_only).min(0).tolist() == [6, 6]
  assert np.argwhere(right_only).max(0).tolist() == [33, 33]
  both = multi_mnist.canvas(ink, ink * 2)[0]
  np.testing.assert_array_equal(both, np.maximum(left_only, right_only))  # max on the overlap


def test_the_resize_is_scipy_imresize_nearest_on_the_byte_scaled_canvas():
  ramp = np.tile(np.arange(36, dtype=np.uint8) * 7, (1, 36, 1))  # column j holds 7 j
  # PIL's NEAREST from 36 to 28 reads column floor((i + 0.5) * 36 / 28) (checked against PIL).
  columns = [0, 1, 3, 4, 5, 7, 8, 9, 10, 12, 13, 14, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27,
             28, 30, 31, 32, 34, 35]
  out = multi_mnist.resize_nearest(ramp)
  assert out.shape == (1, 28, 28) and out.dtype == np.uint8
  # bytescale first: the canvas's maximum, 245, becomes 255.
  np.testing.assert_array_equal(out[0, 5], np.floor(np.array(columns) * 7 * 255 / 245 + 0.5))
  full = ramp.copy()
  full[0, 0, 0] = 255
  np.testing.assert_array_equal(multi_mnist.resize_nearest(full)[0, 5],
                                np.array(columns) * 7)  # peak 255: unscaled
  np.testing.assert_array_equal(multi_mnist.resize_nearest(np.zeros((1, 36, 36), np.uint8)), 0)


def test_composites_carry_their_source_digits_labels(tmp_path):
  path = _write_npz(tmp_path / "m.npz")
  data = data_lib.load(_dataset_config(path))
  assert data.task_names == ("left", "right")
  assert [len(t.classes) for t in data.tasks] == [10, 10]
  with np.load(path) as f:
    labels = {"train": f["train_labels"], "val": f["train_labels"], "test": f["test_labels"]}
  for name in ("train", "val", "test"):
    split = getattr(data, name)
    assert split.inputs.shape == (len(split), 28, 28, 1) and split.inputs.dtype == np.float32
    left, right = _sources(split)
    np.testing.assert_array_equal(split.labels["left"], labels[name][left])
    np.testing.assert_array_equal(split.labels["right"], labels[name][right])
    assert set(split.labels["left"]) <= set(range(10))
    assert sorted(left) == sorted(set(left)), "every image is one example's left digit"
    assert set(right) <= set(left), "right digits come from the same split"


def test_a_twelfth_of_the_training_images_make_the_validation_split(tmp_path):
  data = data_lib.load(_dataset_config(_write_npz(tmp_path / "m.npz")))
  n_val = round(NUM_TRAIN / 12)
  assert (len(data.train), len(data.val), len(data.test)) == (NUM_TRAIN - n_val, n_val,
                                                               NUM_TEST)
  train_ids, val_ids = set(_sources(data.train)[0]), set(_sources(data.val)[0])
  assert not train_ids & val_ids and train_ids | val_ids == set(range(NUM_TRAIN))
  assert sorted(_sources(data.test)[0]) == list(range(NUM_TEST))


def test_the_pairing_is_a_function_of_the_split_seed(tmp_path):
  path = _write_npz(tmp_path / "m.npz")
  first, again = (data_lib.load(_dataset_config(path)) for _ in range(2))
  other = data_lib.load(_dataset_config(path, split_seed=1))
  for name in ("train", "val", "test"):
    np.testing.assert_array_equal(getattr(again, name).inputs, getattr(first, name).inputs)
  assert not np.array_equal(_sources(other.test)[1], _sources(first.test)[1])


def test_missing_labels_flatten_and_normalize_as_for_mnist(tmp_path):
  path = _write_npz(tmp_path / "m.npz")
  plain = data_lib.load(_dataset_config(path))
  flat = data_lib.load(_dataset_config(path, flatten=True, normalize=(0.1307, 0.3081),
                                       missing_fraction=0.5))
  np.testing.assert_allclose(flat.train.inputs,
                             (plain.train.inputs.reshape(-1, 784) - 0.1307) / 0.3081, rtol=1e-5)
  for task in ("left", "right"):
    assert (flat.train.labels[task] == -1).sum() == round(0.5 * len(plain.train))


def _config(arg=None):
  spec = importlib.util.spec_from_file_location(
      "multi_mnist_config", os.path.join(REPO, "configs", "multi_mnist.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_the_config_is_the_papers_protocol():
  config = config_lib.complete(_config())
  config_lib.validate(config, num_devices=1)
  assert (config.dataset.name, config.model.name) == ("multi_mnist", "multi_lenet")
  assert tuple(config.dataset.normalize) == (0.1307, 0.3081) and config.dataset.path == ""
  o = config.optimizer
  assert (o.name, o.learning_rate, o.momentum, o.nesterov, o.weight_decay) == (
      "sgd", 0.05, 0.9, False, 0.0)
  assert (config.batch_size, config.num_epochs) == (256, 100)
  assert config.steps_per_dispatch == 1  # no lax.scan around the convolutions on CPU
  # The rate falls by 0.85 every 10 epochs of 214 steps.
  per_10_epochs = 0.5 ** (10 * 214 / o.half_life)
  assert o.schedule == "exponential" and per_10_epochs == pytest.approx(0.85, abs=1e-4)
  assert _config("epochs=5").num_epochs == 5
  runlocal = _config("runlocal")
  assert (runlocal.num_epochs, runlocal.num_steps) == (0, 300)
  with pytest.raises(ValueError, match="unknown option"):
    _config("epoch=5")


def test_a_few_steps_of_the_runlocal_config_with_mgda_ub(tmp_path):
  config = _config("runlocal")
  config.dataset.path = _write_npz(tmp_path / "m.npz")
  config.weighting, config.weighting_kwargs = "mgda", {"grad_wrt": "rep"}
  config.batch_size = config.eval_batch_size = 16
  config.num_steps = config.log_every = config.eval_every = config.checkpoint_every = 4
  final = mj.train_and_evaluate(ml_collections.ConfigDict(config), str(tmp_path / "w"))
  for task in ("left", "right"):
    assert 0.0 <= final[f"test/{task}/accuracy"] <= 1.0, final
  assert final["weight/left"] + final["weight/right"] == pytest.approx(1.0, abs=1e-5)
