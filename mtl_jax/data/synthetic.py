"""A generated dataset mixing a classification and a regression task, for tests and demos."""

from __future__ import annotations

import numpy as np

from mtl_jax.data.arrays import Dataset, from_arrays

NUM_EXAMPLES = 2000
NUM_FEATURES = 16


def load_synthetic(dataset_config) -> Dataset:
  """Inputs x ~ N(0, I_16); `sign` = [x.u > 0] (2 classes), `value` = sin(x.v) + 0.1 noise.

  `u` and `v` share half their support, so the tasks are related but not identical.
  """
  rng = np.random.default_rng(dataset_config.split_seed)
  x = rng.standard_normal((NUM_EXAMPLES, NUM_FEATURES)).astype(np.float32)
  u, v = rng.standard_normal((2, NUM_FEATURES))
  v[: NUM_FEATURES // 2] = u[: NUM_FEATURES // 2]
  v /= np.linalg.norm(v)
  labels = {"sign": (x @ u > 0).astype(np.int64),
            "value": np.sin(x @ v) + 0.1 * rng.standard_normal(NUM_EXAMPLES)}
  data = from_arrays(x, labels, task_types={"value": "regression"},
                     seed=dataset_config.split_seed)
  return data.blank_train_labels(dataset_config.missing_fraction, dataset_config.split_seed)
