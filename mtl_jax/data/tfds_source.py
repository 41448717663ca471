"""TFDS datasets as in-memory Datasets: `config.dataset.name = "tfds"`, and MNIST without a path.

`config.dataset.tfds` names the dataset, its splits, the input feature and which features are
tasks (`attributes/*`: one task per sub-feature). tensorflow_datasets, and the TensorFlow it
reads with, are imported inside the functions that read, never when mtl_jax is imported.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

from mtl_jax.data.arrays import Dataset, from_arrays, image_inputs, split_arrays
from mtl_jax.errors import ConfigError

KEY = "config.dataset.tfds"
GROUP = "/*"        # a feature path ending in this stands for every feature under it
READ_BATCH = 1024   # examples per tf.data batch while a split is read into numpy

# {task: (feature path, the task_features key that named it)}
TaskFeatures = dict[str, tuple[str, str]]


def load_tfds(dataset_config) -> Dataset:
  """The TFDS dataset `dataset_config.tfds.name`, its `task_features` as tasks.

  Images are resized to `tfds.image_size` when given, then scaled as MNIST's are (uint8 / 255,
  `dataset_config.flatten`, `dataset_config.normalize`). Validation is `tfds.val_split`, or
  else `tfds.val_fraction` of the training examples drawn by `dataset_config.split_seed`.
  Tasks come in the order of `task_features`' keys (a ConfigDict sorts them), a group's in the
  dataset's order; `config.tasks` picks and orders them.

  Raises:
    ConfigError naming the key: an unknown dataset, feature, split or kind; a dataset neither
      prepared in `tfds.data_dir` nor downloadable; images of several sizes without image_size.
  """
  cfg = dataset_config.tfds
  builder = prepared_builder(cfg.name, cfg)
  features = builder.info.features
  feature(features, cfg.image, f"{KEY}.image")
  tasks = task_features(features, cfg.task_features)
  kinds = task_kinds(features, tasks, cfg.task_types)
  paths = tuple(dict.fromkeys(path for path, _ in tasks.values()))

  def part(split_key: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    images, values = read_split(builder, cfg[split_key], key=f"{KEY}.{split_key}",
                                image=cfg.image, paths=paths, image_size=tuple(cfg.image_size),
                                max_examples=cfg.max_examples)
    return image_inputs(images, dataset_config), {t: values[p] for t, (p, _) in tasks.items()}

  train, test = part("train_split"), part("test_split")
  if cfg.val_split:
    val = part("val_split")
  else:
    train_rows, val_rows, _ = split_arrays(len(train[0]), cfg.val_fraction, 0.0,
                                           dataset_config.split_seed)
    train, val = _take(train, train_rows), _take(train, val_rows)
  try:
    data = from_arrays(*train, val=val, test=test, task_types=kinds)
  except ValueError as e:
    raise ConfigError(f"{KEY}: {cfg.name!r}: {e}") from None
  return data.blank_train_labels(dataset_config.missing_fraction, dataset_config.split_seed)


def read_mnist(tfds_config) -> tuple[np.ndarray, ...]:
  """(train_images, train_labels, test_images, test_labels) of TFDS `mnist`, as in an MNIST .npz.

  Images uint8 [N, 28, 28], labels int64 [N]; `tfds_config` gives data_dir, download and
  max_examples (the other keys describe the `tfds` source).
  """
  builder = prepared_builder("mnist", tfds_config)
  arrays = []
  for split in ("train", "test"):
    images, values = read_split(builder, split, key=f"TFDS mnist's {split} split",
                                image="image", paths=("label",), image_size=(),
                                max_examples=tfds_config.max_examples)
    arrays += [images[..., 0], values["label"].astype(np.int64)]
  return tuple(arrays)


def prepared_builder(name: str, tfds_config) -> Any:
  """The TFDS builder of `name` in `tfds_config.data_dir`, downloaded first if missing.

  Any failure to download (no network, a checksum, a file that needs a manual download) is one
  ConfigError naming the dataset and the directory, as is a missing dataset when
  `tfds_config.download` is False, and TFDS or TensorFlow not installed.
  """
  _require_tfds(name)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  try:
    builder = tfds.builder(name, data_dir=tfds_config.data_dir or None)
  except (tfds.core.DatasetNotFoundError, AssertionError) as e:  # AssertionError: bad version
    raise ConfigError(f"{KEY}.name: no TFDS dataset {name!r}: {_first_line(e)}") from None
  if builder.is_prepared():
    return builder
  elsewhere = f"prepare it elsewhere (`tfds build {name} --data_dir=DIR`) and set {KEY}.data_dir"
  if not tfds_config.download:
    raise ConfigError(f"TFDS dataset {name!r} is not in {builder.data_dir} and {KEY}.download "
                      f"is False; with internet access set it True, or {elsewhere}")
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except  (network, checksum, manual download, ...)
    raise ConfigError(f"TFDS dataset {name!r} is not in {builder.data_dir} and downloading it "
                      f"failed ({type(e).__name__}: {_first_line(e)}); check the internet "
                      f"access, or {elsewhere}") from None
  return builder


def feature(features: Any, path: str, key: str) -> Any:
  """The feature at `path` ("attributes/Smiling") of a FeaturesDict; ConfigError naming `key`."""
  node = features
  for part in path.split("/"):
    if not hasattr(node, "keys") or part not in node.keys():
      raise ConfigError(f"{key}: no feature {path!r}; the dataset's features are "
                        f"{sorted(features.keys())}")
    node = node[part]
  return node


def task_features(features: Any, entries: Mapping[str, str]) -> TaskFeatures:
  """{task: (feature path, entry key)}; an entry `group/*` is one task per feature in `group`."""
  if not entries:
    raise ConfigError(f"{KEY}.task_features is empty: map task names to features, e.g. "
                      "{'digit': 'label'} or {'attributes': 'attributes/*'}")
  tasks = {}
  for entry, path in entries.items():
    key = f"{KEY}.task_features.{entry}"
    if not isinstance(path, str) or not path:
      raise ConfigError(f"{key} must be a feature path, got {path!r}")
    if path.endswith(GROUP):
      group = path[:-len(GROUP)]
      node = feature(features, group, key)
      if not hasattr(node, "keys"):
        raise ConfigError(f"{key}: {group!r} is one feature, not a group; drop the {GROUP!r}")
      found = {name: (f"{group}/{name}", entry) for name in node.keys()}
    else:
      feature(features, path, key)
      found = {entry: (path, entry)}
    twice = sorted(set(found) & set(tasks))
    if twice:
      raise ConfigError(f"{key}: task name(s) {twice} already taken by another entry")
    tasks.update(found)
  return tasks


def task_kinds(features: Any, tasks: TaskFeatures, task_types: Mapping[str, str]) -> dict:
  """{task: kind}: `task_types` by task or by its entry key, else from the feature's dtype."""
  known = set(tasks) | {entry for _, entry in tasks.values()}
  unknown = sorted(set(task_types) - known)
  if unknown:
    raise ConfigError(f"{KEY}.task_types names no task or task_features entry: {unknown}")
  return {task: task_types.get(task, task_types.get(entry))
          or _default_kind(feature(features, path, f"{KEY}.task_features.{entry}"))
          for task, (path, entry) in tasks.items()}


def _default_kind(node: Any) -> str:
  """bool features are binary tasks, floats regression, the rest (ClassLabel, ints) classes."""
  dtype = np.dtype(node.np_dtype)
  if dtype == np.bool_:
    return "binary"
  return "regression" if np.issubdtype(dtype, np.floating) else "classification"


def read_split(builder: Any, split: str, *, key: str, image: str, paths: tuple[str, ...],
               image_size: tuple[int, ...], max_examples: int
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Images [N, H, W, C] and {feature path: values [N, ...]} of one split, in the split's order.

  Read through tf.data in batches of READ_BATCH; the first `max_examples` (0: all); images
  resized to `image_size` (height, width) with antialiasing when given, uint8 kept uint8.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  try:
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except ValueError as e:  # an unknown split
    raise ConfigError(f"{key}: {_first_line(e)}") from None
  if max_examples:
    ds = ds.take(max_examples)
  select = functools.partial(_select, image=image, paths=paths, image_size=image_size)
  ds = ds.map(tf.autograph.experimental.do_not_convert(select),
              num_parallel_calls=tf.data.AUTOTUNE).batch(READ_BATCH).prefetch(2)
  try:
    batches = list(tfds.as_numpy(ds))
  except tf.errors.InvalidArgumentError as e:
    raise ConfigError(f"{KEY}.image_size: cannot batch the {image!r} images of "
                      f"{builder.name!r} split {split!r} ({_first_line(e)}); images of several "
                      "sizes need image_size=(height, width)") from None
  if not batches:
    raise ConfigError(f"{key}: split {split!r} of {builder.name!r} has no examples")
  images = np.concatenate([b[0] for b in batches])
  return images, {p: np.concatenate([b[1][p] for b in batches]) for p in paths}


def _require_tfds(name: str) -> None:
  """ConfigError unless TFDS and the TensorFlow it reads through are installed (the `tfds`
  extra: the base install leaves out TensorFlow's 1.3 GB)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  missing = [m for m in ("tensorflow_datasets", "tensorflow") if importlib.util.find_spec(m) is None]
  if missing:
    raise ConfigError(f"{KEY}.name={name!r}: reading TFDS datasets needs {' and '.join(missing)}"
                      ": pip install 'mtl_jax[tfds]'")


def _select(example: dict, *, image: str, paths: tuple[str, ...],
            image_size: tuple[int, ...]) -> tuple[Any, dict]:
  """(image, {path: feature}) of one example, the image resized when `image_size` is given."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  get = lambda path: functools.reduce(lambda node, part: node[part], path.split("/"), example)
  x = get(image)
  if image_size:
    resized = tf.image.resize(x, image_size, antialias=True)
    x = (tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
         if x.dtype == tf.uint8 else resized)
  return x, {p: get(p) for p in paths}


def _take(part: tuple[np.ndarray, dict], rows: np.ndarray) -> tuple[np.ndarray, dict]:
  inputs, labels = part
  return inputs[rows], {t: y[rows] for t, y in labels.items()}


def _first_line(error: Exception) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__
