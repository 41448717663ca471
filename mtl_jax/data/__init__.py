"""Data sources: built-in datasets, TFDS, in-memory arrays, and image files listed in DataFrames."""

from mtl_jax.data.arrays import Dataset, Split, from_arrays, split_arrays
from mtl_jax.data.dense_shapes import load_dense_shapes, make_dense_shapes
from mtl_jax.data.digits import load_digits
from mtl_jax.data.feeds import ArrayData, StreamData, on_devices, pad_split, split_batches
from mtl_jax.data.files import eval_image_batches, image_batches
from mtl_jax.data.frames import check_columns, check_label_hygiene, encode_frame, infer_tasks
from mtl_jax.data.images import cached, decode_image, find_bad_files, image_decoder
from mtl_jax.data.mnist import load_mnist
from mtl_jax.data.multi_mnist import load_multi_mnist
from mtl_jax.data.nyuv2 import load_nyuv2
from mtl_jax.data.pipeline import host_batches
from mtl_jax.data.sampling import Sampler, balanced_probabilities, labelled_masks
from mtl_jax.data.shapes import make_shapes
from mtl_jax.data.synthetic import load_synthetic
from mtl_jax.data.tfds_source import load_tfds

# Built-in datasets by `config.dataset.name`; each loader takes the `config.dataset` block.
BUILTIN = {
    "dense_shapes": load_dense_shapes,
    "digits": load_digits,
    "mnist": load_mnist,
    "multi_mnist": load_multi_mnist,
    "nyuv2": load_nyuv2,
    "synthetic": load_synthetic,
    "tfds": load_tfds,
}


def load(dataset_config) -> Dataset:
  """The built-in dataset named by `dataset_config.name`."""
  from mtl_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel

  if dataset_config.name not in BUILTIN:
    raise ConfigError(f"unknown config.dataset.name {dataset_config.name!r}; "
                      f"known: {sorted(BUILTIN)}")
  return BUILTIN[dataset_config.name](dataset_config)


__all__ = ["ArrayData", "BUILTIN", "Dataset", "Sampler", "Split", "StreamData", "on_devices",
           "balanced_probabilities", "cached", "check_columns", "check_label_hygiene",
           "decode_image", "encode_frame",
           "eval_image_batches", "find_bad_files", "from_arrays", "host_batches",
           "image_batches", "image_decoder", "infer_tasks", "labelled_masks", "load",
           "load_dense_shapes", "load_digits", "load_mnist", "load_multi_mnist", "load_nyuv2",
           "load_synthetic", "load_tfds", "make_dense_shapes", "make_shapes", "pad_split",
           "split_arrays", "split_batches"]
