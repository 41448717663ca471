"""mtl_jax: multi-task learning with hard parameter sharing in JAX/Flax.

    import mtl_jax as mj
    config = mj.default_config()
    metrics = mj.train_and_evaluate(config, "/tmp/run")

    trainer = mj.MultiTaskTrainer(logdir, train_labels, val_labels, tasks, fcn)   # image files
    trainer.fit(10)

On CPU the package sets an XLA flag and glibc's allocator at import, before JAX starts its
backend (`mtl_jax.cpu_tuning`; `MTL_JAX_CPU_TUNING=0` turns it off).
"""

# pylint: disable=g-import-not-at-top,wrong-import-position
from mtl_jax import cpu_tuning

cpu_tuning.apply()  # before anything below can start a JAX backend

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
