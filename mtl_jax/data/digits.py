"""The embedded default dataset: scikit-learn's 1,797 handwritten 8x8 digits, three tasks."""

from __future__ import annotations

import numpy as np

from mtl_jax.data.arrays import Dataset, from_arrays, split_arrays

VAL_FRACTION = 0.1
TEST_FRACTION = 0.2


def load_digits(dataset_config) -> Dataset:
  """Tasks `digit` (10 classes), `parity` (even/odd) and `high` (digit >= 5); inputs f32[64].

  Pixels are scaled to [0, 1]. The 70/10/20 split is a function of `split_seed` alone, and
  `missing_fraction` of each task's training labels are blanked with the same seed.
  """
  from sklearn import datasets  # pylint: disable=import-outside-toplevel

  digits = datasets.load_digits()
  inputs = (digits.data / 16.0).astype(np.float32)
  y = digits.target
  rows = split_arrays(len(y), VAL_FRACTION, TEST_FRACTION, dataset_config.split_seed)
  part = lambda r: (inputs[r], {"digit": y[r], "parity": np.where(y[r] % 2, "odd", "even"),
                                "high": np.where(y[r] >= 5, "high", "low")})
  train, val, test = (part(r) for r in rows)
  data = from_arrays(*train, val=val, test=test)
  return data.blank_train_labels(dataset_config.missing_fraction, dataset_config.split_seed)
