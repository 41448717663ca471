"""mtl_jax: multi-task learning in JAX/Flax, for any model meeting `mtl_jax.models.base`.

    import mtl_jax as mj
    config = mj.default_config()
    metrics = mj.train_and_evaluate(config, "/tmp/run")                 # config.model.name
    metrics = mj.train_and_evaluate(config, "/tmp/run", data=mj.from_arrays(x, labels),
                                    backbone=B, heads={"digit": H1, "parity": H2})  # or model=M

    trainer = mj.MultiTaskTrainer(logdir, train_labels, val_labels, tasks, fcn)   # image files
    trainer.fit(10)
    mj.load("/tmp/run").predict(inputs)   # any run's model back: a DataFrame of predictions

Importing the package changes nothing process-wide. The CPU tuning (an XLA flag and glibc's
allocator settings) is one call, made by `python -m mtl_jax.main` and the experiment scripts;
in a notebook, call `mtl_jax.cpu_tuning.apply()` before the first JAX computation.
"""

# `cpu_tuning` is exported, not applied: its `apply()` belongs to the process's entry point.
from mtl_jax import (cpu_tuning, data, losses, metrics, models, sharding, tasks, viz,
                     weighting)
from mtl_jax.config import default_config
from mtl_jax.errors import ConfigError
from mtl_jax.data import Dataset, from_arrays
from mtl_jax.models.backbones import load_backbone, save_backbone
from mtl_jax.predictor import Predictor, load
from mtl_jax.tasks import Task
from mtl_jax.train import Interrupted, NonFiniteLossError, TrainState, train_and_evaluate
from mtl_jax.trainer import MultiTaskTrainer

__all__ = ["ConfigError", "Dataset", "Interrupted", "MultiTaskTrainer", "NonFiniteLossError",
           "Task", "TrainState", "cpu_tuning", "data", "default_config", "from_arrays",
           "Predictor", "load", "load_backbone", "losses", "metrics", "models", "save_backbone", "sharding", "tasks",
           "train_and_evaluate", "viz", "weighting"]
