"""mtl_jax: multi-task learning with hard parameter sharing in JAX/Flax.

    import mtl_jax as mj
    config = mj.default_config()
    metrics = mj.train_and_evaluate(config, "/tmp/run")

    trainer = mj.MultiTaskTrainer(logdir, train_labels, val_labels, tasks, fcn)   # image files
    trainer.fit(10)

Importing the package changes nothing process-wide. The CPU tuning (an XLA flag and glibc's
allocator settings) is one call, made by `python -m mtl_jax.main` and the experiment scripts;
in a notebook, call `mtl_jax.cpu_tuning.apply()` before the first JAX computation.
"""

from mtl_jax import cpu_tuning
from mtl_jax import data, losses, models, viz, weighting
from mtl_jax.config import ConfigError, default_config
from mtl_jax.data import Dataset, from_arrays
from mtl_jax.models.backbones import load_backbone, save_backbone
from mtl_jax.tasks import Task
from mtl_jax.train import Interrupted, NonFiniteLossError, TrainState, train_and_evaluate
from mtl_jax.trainer import MultiTaskTrainer

__all__ = ["ConfigError", "Dataset", "Interrupted", "MultiTaskTrainer", "NonFiniteLossError",
           "Task", "TrainState", "cpu_tuning", "data", "default_config", "from_arrays",
           "load_backbone", "losses", "models", "save_backbone", "train_and_evaluate", "viz",
           "weighting"]
