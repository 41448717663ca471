"""mtl_jax: multi-task learning with hard parameter sharing in JAX/Flax.

    import mtl_jax as mj
    config = mj.default_config()
    metrics = mj.train_and_evaluate(config, "/tmp/run")
"""

from mtl_jax import data, losses, models, weighting
from mtl_jax.config import ConfigError, default_config
from mtl_jax.data import Dataset, from_arrays
from mtl_jax.tasks import Task
from mtl_jax.train import Interrupted, NonFiniteLossError, TrainState, train_and_evaluate

__all__ = ["ConfigError", "Dataset", "Interrupted", "NonFiniteLossError", "Task", "TrainState",
           "data", "default_config", "from_arrays", "losses", "models", "train_and_evaluate",
           "weighting"]
