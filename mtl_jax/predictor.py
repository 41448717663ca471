"""A trained model back from its workdir: `mj.load(workdir).predict(inputs)`.

Any run that wrote a checkpoint, finished or interrupted, loads: a run of in-memory data
(`train_and_evaluate`, `python -m mtl_jax.main` on a built-in dataset, `mj.from_arrays`) gives a
`Predictor`; a run of image files gives its `MultiTaskTrainer`. Both predict a DataFrame: per
task the predicted class name (regression: the value) and "<task>/<class>" probabilities.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from typing import Any, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pandas as pd

from mtl_jax import atomic
from mtl_jax import best as best_lib
from mtl_jax import build as build_lib
from mtl_jax import checkpoint as checkpoint_lib
from mtl_jax import config as config_lib
from mtl_jax import module_pickle
from mtl_jax import sharding as sharding_lib
from mtl_jax.errors import ConfigError
from mtl_jax.models import backbones
from mtl_jax.tasks import Task

RUN_FILE = "run.json"
USER_MODULES_FILE = "modules.pkl"  # the user's backbone=, heads= or model=, pickled


def save_user_modules(workdir: str, modules: Mapping[str, Any]) -> None:
  """Pickles the user's modules ({"heads": ..., "model": ...}) for `load` (`module_pickle`:
  jax initializers included); warns (and writes nothing) when they cannot be pickled (a lambda,
  a local class): `load` then needs them."""
  try:
    atomic.write_bytes(os.path.join(workdir, USER_MODULES_FILE),
                       module_pickle.dumps(dict(modules)))
  except (pickle.PicklingError, AttributeError, TypeError) as e:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    warnings.warn(f"the {', '.join(modules)} given cannot be saved ({first}); loading the run "
                  "will need them passed again", UserWarning, stacklevel=4)


def load_user_modules(workdir: str) -> dict:
  """The modules `save_user_modules` wrote in `workdir` ({} if none)."""
  path = os.path.join(workdir, USER_MODULES_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path, "rb") as f:
    return pickle.load(f)


class Predictor:
  """A trained multi-task model of in-memory inputs; `predict` gives a DataFrame."""

  def __init__(self, setup: build_lib.Setup, variables: dict, mesh, batch_size: int, step: int):
    self.tasks, self.step = setup.tasks, step
    self._variables, self._batch_size, self._mesh = variables, batch_size, mesh
    replicated = sharding_lib.replicated(mesh)
    self._apply = jax.jit(lambda v, x: setup.model.apply(v, x, train=False),
                          in_shardings=(replicated, replicated), out_shardings=replicated)

  def outputs(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """{task: the model's raw output [N, ...]} for `inputs` [N, ...], in batches of a fixed
    size (the last one padded), so one program serves every call."""
    inputs = np.asarray(inputs, np.float32)
    parts = []
    for start in range(0, len(inputs), self._batch_size):
      batch = inputs[start:start + self._batch_size]
      padded = np.concatenate([batch, np.zeros((self._batch_size - len(batch),
                                                *batch.shape[1:]), batch.dtype)])
      out = jax.device_get(self._apply(self._variables, padded))
      parts.append({k: v[:len(batch)] for k, v in out.items()})
    return {t.name: np.concatenate([p[t.name] for p in parts]) for t in self.tasks}

  def predict(self, inputs: np.ndarray) -> pd.DataFrame:
    """A row per input: per task its predicted class name (regression: the value) and
    "<task>/<class>" probabilities. `inputs` as the run's dataset gives them (for a built-in
    dataset: `mj.data.load(config.dataset)`'s, already scaled)."""
    frame = pd.DataFrame(index=range(len(inputs)))
    if not len(inputs):
      return frame
    outputs = self.outputs(inputs)
    for task in self.tasks:
      for column, values in task.predictions(outputs[task.name]).items():
        frame[column] = list(values) if np.ndim(values) > 1 else values
    return frame


def _loss_not_saved(outputs, labels, mask):
  """Stands for a callable loss, which run.json cannot hold: predicting needs no loss."""
  raise NotImplementedError("a loaded run predicts; its callable loss was not saved")


def record(workdir: str, input_shape, steps_per_epoch: int,
           modules: Mapping[str, Any]) -> dict:
  """What `load` needs beyond tasks and config, for run.json; pickles the user's `modules`
  ({"backbone": ..., "heads": ..., "model": ...}, those given) into `workdir`."""
  if modules and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    save_user_modules(workdir, modules)
  return {"input_shape": list(input_shape), "steps_per_epoch": steps_per_epoch,
          "user_modules": sorted(modules)}


def _run_info(workdir: str) -> dict:
  path = os.path.join(workdir, RUN_FILE)
  if not os.path.isfile(path):
    raise ConfigError(f"no run in {workdir!r} (no {RUN_FILE})")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load(workdir: str | os.PathLike, *, backbone: nn.Module | None = None,
         heads: Mapping[str, nn.Module] | None = None, model: nn.Module | None = None,
         best: bool = False, mesh=None):
  """The model of the run in `workdir` at its latest checkpoint, ready to predict.

  best: the checkpoint kept by `config.best_metric` instead of the latest (in-memory data).

  Returns a `Predictor` for a run of in-memory data, the `MultiTaskTrainer` for a run of image
  files. A run given `backbone=`, `heads=` or `model=` saved them pickled; pass them again
  where they could not be pickled.

  Raises:
    ConfigError: `workdir` holds no run or no checkpoint, or lacks the user's modules.
  """
  workdir = os.fspath(workdir)
  run_info = _run_info(workdir)
  config = config_lib.complete(ml_collections.ConfigDict(run_info["config"]))
  if config.dataset.name == config_lib.IMAGES:
    if best:
      raise ConfigError("mj.load(..., best=True) loads runs of in-memory data; an image run "
                        "loads as its MultiTaskTrainer, at its latest checkpoint")
    from mtl_jax import trainer  # pylint: disable=import-outside-toplevel
    return trainer.MultiTaskTrainer.load(workdir, mesh, heads=heads, model=model)
  if "input_shape" not in run_info:
    raise ConfigError(f"{workdir!r} was written by an older mtl_jax (run.json has no "
                      "input_shape); it cannot be loaded")
  given = {k: v for k, v in (("backbone", backbone), ("heads", heads), ("model", model))
           if v is not None}
  modules = {**load_user_modules(workdir), **given}
  missing = sorted(set(run_info.get("user_modules", ())) - set(modules))
  if missing:
    raise ConfigError(f"{workdir!r} was trained with a user's {', '.join(missing)} that could "
                      f"not be saved: pass {', '.join(f'{m}=' for m in missing)} to mj.load")
  if "backbone" not in modules and config.model.backbone_path:
    modules["backbone"] = backbones.load_module(config.model.backbone_path)
  tasks = tuple(Task.from_json(t, loss=_loss_not_saved if t.get("custom_loss") else None)
                for t in run_info["tasks"])
  mesh = sharding_lib.make_mesh() if mesh is None else mesh
  setup = build_lib.build_setup(config, tasks, steps_per_epoch=run_info["steps_per_epoch"],
                                **modules)
  from mtl_jax import train  # pylint: disable=import-outside-toplevel
  example = np.zeros((1, *run_info["input_shape"]), np.float32)
  fresh = train.create_train_state(setup, config.seed, example, mesh)
  checkpoints = checkpoint_lib.Checkpointer(workdir, config.keep_checkpoints,
                                            subdir=best_lib.DIRECTORY if best else "checkpoints")
  try:
    state = checkpoints.restore(fresh, run_info)
  finally:
    checkpoints.close()
  if state is None:
    raise ConfigError(f"no checkpoint in {checkpoints.directory!r} to load" + (
        ": the run had no config.best_metric" if best else
        ": the run stopped before its first"))
  return Predictor(setup, state.variables, mesh, config.eval_batch_size, int(state.step))
