"""MNIST from an `.npz` file or TFDS `mnist`: tasks `digit` (10 classes) and `parity` (even/odd)."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from mtl_jax.data import tfds_source
from mtl_jax.data.arrays import Dataset, from_arrays, image_inputs, split_arrays
from mtl_jax.errors import ConfigError

KEYS = ("train_images", "train_labels", "test_images", "test_labels")
VAL_FRACTION = 1 / 12  # 5,000 of MNIST's 60,000 training images
IMAGE_SHAPE = (28, 28)


def load_mnist(dataset_config) -> Dataset:
  """MNIST read from `dataset_config.path`, an `.npz` holding `KEYS`, or from TFDS `mnist`.

  Without a path the same four arrays come from TFDS `mnist` (`tfds_source.read_mnist`: its
  train and test splits in `dataset_config.tfds.data_dir`, downloaded when missing if
  `tfds.download`), so both sources give the same Dataset for the same images.
  `train_images` / `test_images` are uint8 [N, 28, 28] and the labels [N] ints 0..9. Inputs are
  f32 in [0, 1] of shape [N, 28, 28, 1]; `dataset_config.flatten` makes them [N, 784] (for Dense
  layers) and `dataset_config.normalize = (mean, std)` maps x to (x - mean) / std after that.
  Validation rows (a twelfth, 5,000 of MNIST's 60,000) come from the training images by
  `split_seed`; the test split is the file's test set. `missing_fraction` blanks that fraction
  of each task's training labels with the same seed.

  Raises:
    ConfigError: a missing or unreadable file, a missing key, arrays of the wrong shape, or
      (without a path) TFDS `mnist` neither in `tfds.data_dir` nor downloadable.
  """
  train_x, train_y, test_x, test_y = mnist_arrays(dataset_config)
  inputs = image_inputs(np.concatenate([train_x, test_x]), dataset_config)
  train_inputs, test_inputs = inputs[:len(train_x)], inputs[len(train_x):]
  train_rows, val_rows, _ = split_arrays(len(train_y), VAL_FRACTION, 0.0,
                                         dataset_config.split_seed)
  part = lambda x, y: (x, {"digit": y, "parity": np.where(y % 2, "odd", "even")})
  data = from_arrays(*part(train_inputs[train_rows], train_y[train_rows]),
                     val=part(train_inputs[val_rows], train_y[val_rows]),
                     test=part(test_inputs, test_y))
  return data.blank_train_labels(dataset_config.missing_fraction, dataset_config.split_seed)


def mnist_arrays(dataset_config) -> tuple[np.ndarray, ...]:
  """(train_images uint8 [N, 28, 28], train_labels, test_images, test_labels) from
  `dataset_config.path`'s .npz, or from TFDS `mnist` without a path; shared by the datasets
  built from MNIST (`mnist`, `multi_mnist`)."""
  if dataset_config.path:
    return read_npz(dataset_config.path)
  return tfds_source.read_mnist(dataset_config.tfds)


def read_npz(path: str) -> tuple[np.ndarray, ...]:
  """(train_images, train_labels, test_images, test_labels) of the file, checked."""
  if not os.path.isfile(path):
    raise ConfigError(f"config.dataset.path: no such file {path!r}")
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in KEYS if k not in f.files]
      if missing:
        raise ConfigError(f"config.dataset.path: {path!r} lacks the key(s) {missing}; "
                          f"an MNIST .npz holds {list(KEYS)}")
      arrays = tuple(np.asarray(f[k]) for k in KEYS)
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(f"config.dataset.path: cannot read {path!r} as an .npz: {e}") from None
  for split, (images, labels) in (("train", arrays[:2]), ("test", arrays[2:])):
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
      raise ConfigError(f"config.dataset.path: {split}_images in {path!r} must be "
                        f"[N, 28, 28], got {list(images.shape)}")
    if labels.shape != (len(images),):
      raise ConfigError(f"config.dataset.path: {split}_labels in {path!r} must be "
                        f"[{len(images)}], got {list(labels.shape)}")
  return arrays[0], arrays[1].astype(np.int64), arrays[2], arrays[3].astype(np.int64)

