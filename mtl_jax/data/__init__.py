"""Data sources: built-in datasets and in-memory arrays, as `Dataset`s of encoded labels."""

from mtl_jax.data.arrays import Dataset, Split, from_arrays, split_arrays
from mtl_jax.data.digits import load_digits
from mtl_jax.data.pipeline import Sampler, host_batches, process_rows
from mtl_jax.data.synthetic import load_synthetic

# Built-in datasets by `config.dataset.name`; each loader takes the `config.dataset` block.
BUILTIN = {
    "digits": load_digits,
    "synthetic": load_synthetic,
}


def load(dataset_config) -> Dataset:
  """The built-in dataset named by `dataset_config.name`."""
  from mtl_jax.config import ConfigError  # pylint: disable=import-outside-toplevel

  if dataset_config.name not in BUILTIN:
    raise ConfigError(f"unknown config.dataset.name {dataset_config.name!r}; "
                      f"known: {sorted(BUILTIN)}")
  return BUILTIN[dataset_config.name](dataset_config)


__all__ = ["BUILTIN", "Dataset", "Sampler", "Split", "from_arrays", "host_batches", "load",
           "load_digits", "load_synthetic", "process_rows", "split_arrays"]
