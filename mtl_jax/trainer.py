"""The image `MultiTaskTrainer`: a DataFrame of files with partial labels, on top of `train.py`.

    import pandas as pd, mtl_jax as mj
    trainer = mj.MultiTaskTrainer("/tmp/run", pd.read_csv("train.csv"), pd.read_csv("val.csv"),
                                  ["shape", "color"], fcn=[32, "p", 64, "p"], train_fcn=True)
    trainer.fit(10)                  # train 10 more epochs
    trainer.evaluate()               # {"val/shape/accuracy": ..., "weight/shape": ..., ...}
    trainer.predict(paths)           # a DataFrame: predicted class and probabilities per task
    trainer = mj.MultiTaskTrainer.load("/tmp/run")

The trainer turns its arguments into a `config` (the same schema as config files, saved in
`run.json`), checks everything before it writes anything (columns, tasks, every image file,
the backbone against `imshape`/`num_channels`), then trains with `mtl_jax.train.run`: the same
train step, checkpoints, writers and evaluation as `train_and_evaluate`, fed by the grain file
pipeline (`StreamData`, one jitted step per batch). It logs, evaluates and checkpoints once per
epoch. The data order is a function of (seed, step), so the step in a checkpoint is the whole
input-pipeline state: rerunning a script on the same logdir resumes where it stopped, with the
same batches.

The logdir:

| path                  | what                                                              |
| --------------------- | ----------------------------------------------------------------- |
| `run.json`            | tasks (names, kinds, class names), the whole configuration, notes |
| `checkpoints/<step>/` | orbax checkpoints of the TrainState, each epoch                   |
| `backbone/`           | the backbone's module (`mtl_jax.models.backbones`), for `load`    |
| `data.npz`            | the file paths and encoded labels of train, val (and downstream)  |
| `final_metrics.json`  | `evaluate()` after the last `fit`                                 |
| `events.out.tfevents.*` | TensorBoard: per-task losses, weights, learning rate, val metrics, |
|                       | hparams (the configuration) and the notes                         |
| `curves.png`          | the run's curves (`mtl_jax.viz.curves`), after every `fit`        |
| `modules.pkl`         | the user's `heads=`/`model=`/callable losses, pickled for `load`  |

`mj.load(logdir)` gives the trainer back (`MultiTaskTrainer.load`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import warnings
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd

from mtl_jax import atomic
from mtl_jax import augment as augment_lib
from mtl_jax import build as build_lib
from mtl_jax import config as config_lib
from mtl_jax import data as data_lib
from mtl_jax import predictor
from mtl_jax import metrics as metrics_lib
from mtl_jax import probe as probe_lib
from mtl_jax import report
from mtl_jax import sharding as sharding_lib
from mtl_jax import tasks as tasks_lib
from mtl_jax import train as train_lib
from mtl_jax import validate
from mtl_jax import workdir_lock
from mtl_jax.checkpoint import Checkpointer
from mtl_jax.errors import ConfigError
from mtl_jax.models import backbones
from mtl_jax.models import base as models_base
from mtl_jax.models.specs import parse_spec
from mtl_jax.tasks import Task

DOWNSTREAM = "downstream"   # the probe's metric: "val/downstream/accuracy"
CACHE_BYTES = 1 << 30       # splits whose decoded images fit in this stay in memory
BAD_FILES_SHOWN = 5         # bad paths named in an error message
_RUN_FILE = "run.json"
_DATA_FILE = "data.npz"
_BACKBONE_DIR = "backbone"
# Config keys a resumed run may change (config.allow_config_change: any).
_EVERY_RUN = ("num_steps", "notes", "allow_config_change")


# ----------------------------------------------------------------------------------------------
# Inputs: what a trainer is built from, every part checked.


@dataclasses.dataclass(frozen=True)
class Files:
  """Image files and their encoded labels ({task: i32[N], -1 missing | f32[N], NaN missing})."""
  paths: np.ndarray
  labels: dict[str, np.ndarray]

  def __len__(self) -> int:
    return len(self.paths)


@dataclasses.dataclass(frozen=True)
class Inputs:
  """A trainer's validated parts.

  `downstream` holds the probe's files with labels {"downstream": i32[N]} (class names in
  `downstream_classes`), or is None. `backbone_variables` is None for a fresh backbone (or when
  loading, where the checkpoint has them). `decode` reads the run's files; it keeps the
  images the checks decoded when they all fit in `CACHE_BYTES`.
  """
  config: ml_collections.ConfigDict
  tasks: tuple[Task, ...]
  train: Files
  val: Files
  downstream: Files | None
  downstream_classes: tuple
  backbone: nn.Module | None
  backbone_variables: dict | None
  decode: Callable[[str], np.ndarray]
  setup: build_lib.Setup
  user_modules: dict  # the user's code given: "heads", "model", "task_losses" (callables)


# MultiTaskTrainer argument -> the config key it sets (`None` leaves default_config()'s value).
TRAINER_KEYS = {
    "seed": "seed", "notes": "notes", "filepaths": "images.filepaths",
    "imshape": "images.imshape", "num_channels": "images.num_channels", "norm": "images.norm",
    "single_channel": "images.single_channel", "balance_probs": "images.balance_probs",
    "shuffle": "images.shuffle", "num_parallel_calls": "images.num_workers",
    "skip_bad_files": "images.skip_bad_files", "shared_layers": "model.shared_layers",
    "task_layers": "model.task_layers", "dropout_rate": "model.dropout_rate",
    "global_pooling": "model.global_pooling", "train_fcn": "model.train_backbone",
    "lr": "optimizer.learning_rate", "batch_size": "batch_size", "architecture": "model.name",
}


def trainer_config(tasks: Sequence[str], fcn: Any = None, *, task_types=None, task_losses=None,
                   task_weights=None, augment=None, lr_decay=None, architecture_kwargs=None,
                   **arguments) -> ml_collections.ConfigDict:
  """The configuration (`mtl_jax.config` schema) that `MultiTaskTrainer`'s arguments describe:
  `default_config()` with the arguments given (not None) set, so a trainer and a config file
  that set the same keys make the same run.

  Raises:
    ConfigError: an argument of the wrong type or value, naming it.
  """
  c = config_lib.default_config()
  c.dataset.name = config_lib.IMAGES
  c.tasks = tuple(tasks)
  name = "fcn"
  try:
    if fcn is not None and backbones.is_spec(fcn):
      c.model.backbone = parse_spec(fcn)
    for name, value in arguments.items():
      if value is None:
        continue
      if name not in TRAINER_KEYS:
        raise TypeError(f"unexpected argument {name!r}")
      *blocks, key = TRAINER_KEYS[name].split(".")
      block = c
      for b in blocks:
        block = block[b]
      block[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    name = "architecture_kwargs"
    c.model.kwargs = ml_collections.ConfigDict(dict(architecture_kwargs or {}))
    name = "task_types"
    c.images.task_types = ml_collections.ConfigDict(dict(task_types or {}))
    name = "task_losses"
    c.images.task_losses = ml_collections.ConfigDict(dict(task_losses or {}))
    name = "augment"
    if augment is not None:
      c.augment = ml_collections.ConfigDict(augment_lib.resolve(augment))
    name = "task_weights"
    if isinstance(task_weights, str):
      c.weighting = task_weights
    elif task_weights is not None:
      c.task_weights = tuple(float(w) for w in task_weights)
    name = "lr_decay"
    if lr_decay is not None:
      c.optimizer.schedule = "exponential" if lr_decay else "constant"
      c.optimizer.half_life = float(lr_decay)
    if arguments.get("batch_size") is not None:
      c.eval_batch_size = arguments["batch_size"]
  except (TypeError, ValueError, KeyError) as e:
    raise ConfigError(f"{name}: {_one_line(e)}") from None
  return c


def prepare(config: ml_collections.ConfigDict, train_labels: pd.DataFrame,
            val_labels: pd.DataFrame, fcn: Any, downstream_labels: Mapping[str, Any] | None,
            mesh, *, epoch_frequencies: bool, heads: Mapping[str, nn.Module] | None = None,
            model: nn.Module | None = None,
            task_losses: Mapping[str, Any] | None = None) -> Inputs:
  """Checks everything a run needs and returns its parts; writes nothing.

  Args:
    config: a complete configuration with `dataset.name == "images"`.
    train_labels, val_labels: a file-path column and one column per task.
    fcn: the backbone, in any form `mtl_jax.models.backbones.resolve` takes (None with `model`).
    downstream_labels: {file path: label} for the linear probe, or None.
    mesh: the mesh the batches are split over.
    epoch_frequencies: log, evaluate and checkpoint once per epoch (else the config's steps).
    heads, model: a user's heads or whole model (`mtl_jax.build.build_setup`).
    task_losses: {task: loss name or callable}, over `config.images.task_losses`.

  Raises:
    ConfigError: one line naming the problem: an invalid configuration, a missing column or
      task, a task without train labels, files that are missing or cannot be decoded (unless
      `config.images.skip_bad_files`, which warns and drops their rows), too few files for a
      batch, or a backbone or model that cannot take `imshape`/`num_channels`.
  """
  config = copy.deepcopy(config)
  config_lib.validate(config, num_devices=mesh.size)
  images = config.images
  names = _task_names(config, train_labels)
  for frame, split in ((train_labels, "train"), (val_labels, "val")):
    _require_frame(frame, split)
    data_lib.check_columns(frame, names, images.filepaths, split)
  data_lib.check_label_hygiene({"train": train_labels, "val": val_labels}, names,
                               images.filepaths)
  downstream = _downstream_frame(downstream_labels, images.filepaths)
  frames = {"train": train_labels, "val": val_labels, DOWNSTREAM: downstream}
  num_files = sum(len(f) for f in frames.values() if f is not None)
  report.announce(f"checking {num_files:,} image files and building the model...")
  decode = _cache_if_small(decoder(images), num_files, (*images.imshape, images.num_channels))
  frames = _without_bad_files(frames, images, decode)
  losses = {**images.task_losses.to_dict(), **dict(task_losses or {})}
  try:
    tasks = data_lib.infer_tasks(frames["train"], frames["val"], names,
                                 images.task_types.to_dict(), task_losses=losses)
  except ValueError as e:
    raise ConfigError(_one_line(e)) from None
  train, val = (_files(frames[s], tasks, images.filepaths) for s in ("train", "val"))
  validate.check_labelled({"val": val.labels}, tasks)  # train: infer_tasks checked it
  sampler = _sampler(config, tasks, train)
  if epoch_frequencies:
    config.log_every = config.eval_every = config.checkpoint_every = sampler.steps_per_epoch
  if config.num_epochs:
    config.num_steps = config.num_epochs * sampler.steps_per_epoch
  probe_files, probe_classes = _probe_files(frames[DOWNSTREAM], images.filepaths)

  input_shape = (*images.imshape, images.num_channels)
  module = variables = None
  if model is None:
    if fcn is None:
      raise ConfigError("fcn (the backbone) is required unless a whole model= is given")
    module, variables = backbones.resolve(fcn, config.model.dropout_rate)
    backbones.feature_shape(module, variables, input_shape)
  elif fcn is not None:
    raise ConfigError("give a whole model= or its backbone fcn=, not both")
  setup = build_lib.build_setup(config, tasks, backbone=module, heads=heads, model=model,
                                steps_per_epoch=sampler.steps_per_epoch)
  if setup.weighting.val_batch:
    raise ConfigError(f"config.weighting={config.weighting!r} reads validation batches in the "
                      "train step, which image files do not provide yet: use "
                      "mtl_jax.train_and_evaluate with in-memory data")
  _check_model(setup, input_shape)
  if module is not None and variables is None and not config.model.train_backbone:
    warnings.warn("the backbone starts from random weights and train_fcn=False keeps them "
                  "frozen; pass train_fcn=True to train it", UserWarning, stacklevel=3)
  user_modules = {k: v for k, v in (("heads", heads), ("model", model)) if v is not None}
  callables = {t.name: t.loss for t in tasks if callable(t.loss)}
  if callables:
    user_modules["task_losses"] = callables
  return Inputs(config, tasks, train, val, probe_files, probe_classes, module, variables,
                decode, setup, user_modules)


def _one_line(error: Exception) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__


def _require_frame(frame: Any, split: str) -> None:
  if not isinstance(frame, pd.DataFrame):
    raise ConfigError(f"the {split} labels must be a pandas DataFrame, got "
                      f"{type(frame).__name__}")
  if frame.empty:
    raise ConfigError(f"the {split} labels are empty")


def _task_names(config: ml_collections.ConfigDict, train_labels: pd.DataFrame) -> tuple:
  """config.tasks, or every column of the train labels but the file paths."""
  if config.tasks:
    names = (config.tasks,) if isinstance(config.tasks, str) else config.tasks
    return tuple(n.strip() for item in names for n in str(item).split(",") if n.strip())
  return tuple(str(c) for c in train_labels.columns if c != config.images.filepaths)


def _downstream_frame(labels: Mapping[str, Any] | None, filepaths: str) -> pd.DataFrame | None:
  if labels is None:
    return None
  if not isinstance(labels, Mapping) or not labels:
    raise ConfigError("downstream_labels must be a non-empty dict {file path: label}")
  return pd.DataFrame({filepaths: [os.fspath(p) for p in labels],
                       DOWNSTREAM: list(labels.values())})


def decoder(images: ml_collections.ConfigDict):
  """path -> f32[H, W, C] as `config.images` says."""
  return data_lib.image_decoder(tuple(images.imshape), images.num_channels, images.norm,
                                images.single_channel)


def _paths(frame: pd.DataFrame, filepaths: str) -> np.ndarray:
  """str[N]: the frame's file paths, made absolute (a run can be loaded from elsewhere)."""
  return np.asarray([os.path.abspath(p if isinstance(p, (str, os.PathLike)) else str(p))
                     for p in frame[filepaths]], dtype=str)


def _without_bad_files(frames: dict, images: ml_collections.ConfigDict, decode) -> dict:
  """`frames` without rows whose file is missing or cannot be decoded (or ConfigError)."""
  paths = {name: _paths(f, images.filepaths) for name, f in frames.items() if f is not None}
  unique = list(dict.fromkeys(p for ps in paths.values() for p in ps))
  bad = set(data_lib.find_bad_files(unique, images.num_workers, decode=decode))
  if not bad:
    return frames
  named = validate.name_bad_files([p for p in unique if p in bad], BAD_FILES_SHOWN)
  if not images.skip_bad_files:
    raise ConfigError(f"{len(bad)} of {len(unique)} image files are missing or cannot be "
                      f"decoded: {named} (skip_bad_files=True drops them)")
  dropped = {n: int(np.isin(ps, list(bad)).sum()) for n, ps in paths.items()}
  warnings.warn(f"skipping {len(bad)} image files that are missing or cannot be decoded "
                f"(rows dropped: {dropped}): {named}", UserWarning, stacklevel=4)
  return {n: (f if f is None else f[~np.isin(paths[n], list(bad))].reset_index(drop=True))
          for n, f in frames.items()}


def _files(frame: pd.DataFrame, tasks: Sequence[Task], filepaths: str) -> Files:
  return Files(_paths(frame, filepaths), data_lib.encode_frame(frame, tasks))


def _probe_files(frame: pd.DataFrame | None, filepaths: str) -> tuple[Files | None, tuple]:
  """The probe's files with labels {"downstream": i32[N]}, and its class names."""
  if frame is None:
    return None, ()
  try:
    task = tasks_lib.infer_task(DOWNSTREAM, frame[DOWNSTREAM].to_numpy(dtype=object))
  except ValueError as e:
    raise ConfigError(f"downstream_labels: {e}") from None
  files = _files(frame, (task,), filepaths)
  labels = files.labels[DOWNSTREAM]
  present = labels >= 0
  files = Files(files.paths[present], {DOWNSTREAM: labels[present]})
  problem = probe_lib.check_labels(files.labels[DOWNSTREAM])
  if problem:
    raise ConfigError(f"downstream_labels: {problem}")
  return files, task.classes


class InOrder:
  """A sampler's batches with each epoch's examples in file order (`shuffle=False`).

  Without balancing every epoch is 0, 1, ..., N-1; with it, the epoch's balanced draw sorted.
  """

  def __init__(self, sampler: data_lib.Sampler):
    self._sampler = sampler
    self.batch_size = sampler.batch_size
    self.steps_per_epoch = sampler.steps_per_epoch

  def indices(self, steps: Sequence[int]) -> np.ndarray:
    out = np.empty((len(steps), self.batch_size), np.int32)
    for i, step in enumerate(steps):
      epoch, k = divmod(int(step), self.steps_per_epoch)
      order = np.sort(self._sampler.epoch_order(epoch))
      out[i] = order[k * self.batch_size:(k + 1) * self.batch_size]
    return out


def _sampler(config: ml_collections.ConfigDict, tasks: Sequence[Task], train: Files):
  """The training order: balanced by label presence or a plain shuffle, in file order or not."""
  probabilities = None
  if config.images.balance_probs:
    probabilities = data_lib.balanced_probabilities(data_lib.labelled_masks(tasks, train.labels))
  try:
    sampler = data_lib.Sampler(len(train), config.batch_size, config.seed, probabilities)
  except ValueError as e:
    raise ConfigError(f"batch_size: {e}") from None
  return sampler if config.images.shuffle else InOrder(sampler)


def _check_model(setup: build_lib.Setup, input_shape: Sequence[int]) -> None:
  """ConfigError if some layer of the model fails on or empties an input of `input_shape`,
  or the model breaks the contract of `mtl_jax.models.base`."""
  model = setup.model
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  described = f"imshape/num_channels {tuple(input_shape)}"
  try:
    variables = jax.eval_shape(lambda y: model.init(jax.random.PRNGKey(0), y, train=False,
                                                    capture_intermediates=True), x)
  except Exception as e:  # pylint: disable=broad-except  (any layer's failure)
    raise ConfigError(f"the model cannot take {described}: {type(e).__name__}: "
                      f"{_one_line(e)}") from None
  flat = jax.tree_util.tree_flatten_with_path(variables.get("intermediates", {}))[0]
  for path, leaf in flat:
    if 0 in leaf.shape:
      name = "/".join(str(getattr(k, "key", k)) for k in path[:-2])
      raise ConfigError(f"layer {name!r} outputs an empty {tuple(leaf.shape[1:])} for "
                        f"{described}: use a larger imshape or fewer 'p' layers")
  build_lib.check_model(setup, x)


def _cache_if_small(decode, num_files: int, input_shape: Sequence[int]):
  """`decode` remembering its images when `num_files` of them fit in `CACHE_BYTES`."""
  if num_files * int(np.prod(input_shape)) * 4 <= CACHE_BYTES:
    return data_lib.cached(decode)
  return decode


def _data_digest(inputs: Inputs) -> str:
  digest = hashlib.sha256()
  for files in (inputs.train, inputs.val, inputs.downstream):
    if files is not None:
      digest.update("\n".join(files.paths).encode())
      for name in sorted(files.labels):
        digest.update(name.encode() + np.ascontiguousarray(files.labels[name]).tobytes())
  return digest.hexdigest()


def _jsonable(value: Any) -> Any:
  return json.loads(json.dumps(value))


# ----------------------------------------------------------------------------------------------
# The trainer.


class MultiTaskTrainer:
  """Trains a multi-task network on image files with partial labels.

  Every argument left at None takes `mtl_jax.default_config()`'s value (shown in brackets), so
  a trainer and a config file (`configs/shapes.py`) setting the same keys make the same run;
  `trainer.config` is that configuration.

  Args:
    logdir: where checkpoints, metrics, TensorBoard files and the run's description go.
    train_labels: a DataFrame with a file-path column (`filepaths`) and one column per task;
      empty cells (None/NaN/"") are missing labels.
    val_labels: the same columns, for evaluation.
    tasks: the task columns, in the order of the heads.
    fcn: the feature extractor: a `(flax module, variables)` pair, a layer spec such as
      `[32, "p", 64, "p"]` (built and initialised fresh), or a directory written by
      `mtl_jax.save_backbone`. None only with `model`.
    heads: {task: flax module} replacing the spec-built heads; each maps the shared
      representation to its task's output.
    model: a whole multi-task module (`mtl_jax.models.base`'s contract) instead of `fcn`,
      `shared_layers`, `task_layers` and `heads`.
    architecture: a registered architecture (`mtl_jax.models.REGISTRY`) built on `fcn`, with
      `shared_layers` as its experts, columns or stages and the heads as its towers ["hps"].
    architecture_kwargs: its hyper-parameters, e.g. {"num_experts": 4}.
    shared_layers: layer spec after the backbone, shared by all tasks [(256,)].
    task_layers: layer spec of each head before its global pooling and Dense output [(64,)].
    task_weights: None (equal), a list of fixed weights, "adaptive" (uncertainty weighting,
      Kendall et al. 2018) or any name in `mtl_jax.weighting.REGISTRY`.
    balance_probs: resample every epoch so each task gets about as many labelled examples
      [True].
    augment: augmentation options (`mtl_jax.augment`), True for its defaults, False for none
      [none]. Runs on the device inside the train step, never at evaluation or prediction.
    imshape: (height, width) every image is resized to [(64, 64)].
    num_channels: channels of the network's input [3].
    batch_size: global batch size, split over the mesh's devices, also the eval batch [128,
      eval 512].
    num_parallel_calls: image-decoding threads [4].
    notes: free text saved in run.json and shown in TensorBoard.
    filepaths: the name of the file-path column ["filepath"].
    train_fcn: train the backbone too [True]; False freezes it: inference mode (batch norm
      uses its running statistics), no gradient through it, its variables never change.
    lr: Adam's learning rate [2e-3].
    lr_decay: 0 for a constant rate [constant], else the number of steps over which it halves
      (smooth exponential decay, as tf.keras's ExponentialDecay(lr, lr_decay, 0.5)).
    norm: pixel values are divided by this [255: 8-bit images to [0, 1]].
    shuffle: False takes each epoch's examples in file order [True].
    single_channel: read one channel of each file and repeat it `num_channels` times [False].
    global_pooling: "max" or "average", how each head pools its features ["max"].
    dropout_rate: the rate of every "d" layer (spatial dropout) [0.0].
    task_types: {task: kind}: "classification" (the default), "binary" or "regression".
    task_losses: {task: loss}: a loss name of the task's kind ("mse", "l1", "huber" for
      regression) or a callable `loss(outputs, labels, mask) -> per-element losses`.
    downstream_labels: {file path: label}; every evaluation then reports
      "val/downstream/accuracy", a linear probe of the model's pooled representation
      (`mtl_jax.probe`, `mtl_jax.models.base.features`).
    mesh: a `jax.sharding.Mesh` to split each batch over (default: every device).
    strategy: another name for `mesh`.
    seed: initialisation, data order, dropout and augmentation are functions of it [0].
    skip_bad_files: drop rows whose file is missing or cannot be decoded (with a warning)
      instead of raising [False].

  Raises:
    ConfigError: bad input, found before anything is written (see `prepare`).
  """

  def __init__(self, logdir: str | os.PathLike, train_labels: pd.DataFrame,
               val_labels: pd.DataFrame, tasks: Sequence[str], fcn: Any = None, *,
               heads: Mapping[str, nn.Module] | None = None, model: nn.Module | None = None,
               architecture: str | None = None,
               architecture_kwargs: Mapping[str, Any] | None = None,
               shared_layers: Sequence[Any] | None = None,
               task_layers: Sequence[Any] | None = None,
               task_weights: str | Sequence[float] | None = None,
               balance_probs: bool | None = None, augment: bool | Mapping[str, Any] | None = None,
               imshape: Sequence[int] | None = None, num_channels: int | None = None,
               batch_size: int | None = None, num_parallel_calls: int | None = None,
               notes: str | None = None, filepaths: str | None = None,
               train_fcn: bool | None = None, lr: float | None = None,
               lr_decay: float | None = None, norm: float | None = None,
               shuffle: bool | None = None, single_channel: bool | None = None,
               global_pooling: str | None = None, dropout_rate: float | None = None,
               task_types: Mapping[str, str] | None = None,
               task_losses: Mapping[str, Any] | None = None,
               downstream_labels: Mapping[str, Any] | None = None, mesh=None, strategy=None,
               seed: int | None = None, skip_bad_files: bool | None = None):
    if isinstance(tasks, str):
      tasks = [tasks]
    if not tasks:
      raise ConfigError("tasks must name at least one column")
    config = trainer_config(
        tasks, fcn, task_types=task_types,
        task_losses={k: v for k, v in (task_losses or {}).items() if isinstance(v, str)},
        task_weights=task_weights, augment=augment, lr_decay=lr_decay,
        architecture_kwargs=architecture_kwargs, architecture=architecture,
        shared_layers=shared_layers, task_layers=task_layers, balance_probs=balance_probs,
        imshape=imshape, num_channels=num_channels, batch_size=batch_size,
        num_parallel_calls=num_parallel_calls, notes=notes, filepaths=filepaths,
        train_fcn=train_fcn, lr=lr, norm=norm, shuffle=shuffle, single_channel=single_channel,
        global_pooling=global_pooling, dropout_rate=dropout_rate, seed=seed,
        skip_bad_files=skip_bad_files)
    mesh = _mesh(mesh, strategy)
    inputs = prepare(config, train_labels, val_labels, fcn, downstream_labels, mesh,
                     epoch_frequencies=True, heads=heads, model=model, task_losses=task_losses)
    self._start(os.fspath(logdir), inputs, mesh)
    self._check_logdir()
    self._write_run()

  @classmethod
  def from_inputs(cls, logdir: str | os.PathLike, inputs: Inputs, mesh=None,
                  write: bool = True) -> "MultiTaskTrainer":
    """A trainer of prepared `inputs` (see `prepare`); used by configs and `load`."""
    trainer = cls.__new__(cls)
    trainer._start(os.fspath(logdir), inputs, _mesh(mesh, None))
    if write:
      trainer._check_logdir()
      trainer._write_run()
    return trainer

  @classmethod
  def load(cls, logdir: str | os.PathLike, mesh=None, strategy=None, *,
           heads: Mapping[str, nn.Module] | None = None, model: nn.Module | None = None,
           task_losses: Mapping[str, Callable] | None = None) -> "MultiTaskTrainer":
    """The trainer saved in `logdir`, at its latest checkpoint.

    A run given `heads=`, `model=` or callable `task_losses` saved them pickled; pass them
    again where they could not be pickled (a lambda, a local class).

    Raises:
      ConfigError: `logdir` holds no trainer run or no checkpoint, or lacks the user's code.
    """
    logdir = os.fspath(logdir)
    run_path = os.path.join(logdir, _RUN_FILE)
    if not os.path.isfile(run_path):
      raise ConfigError(f"no trainer run in {logdir!r} (no {_RUN_FILE})")
    with open(run_path, encoding="utf-8") as f:
      run_info = json.load(f)
    config = config_lib.complete(ml_collections.ConfigDict(run_info["config"]))
    user_modules = {**predictor.load_user_modules(logdir), **{k: v for k, v in (
        ("heads", heads), ("model", model), ("task_losses", task_losses)) if v is not None}}
    losses = user_modules.get("task_losses", {})
    try:
      tasks = tuple(Task.from_json(t, loss=losses.get(t["name"])) for t in run_info["tasks"])
    except ValueError as e:
      raise ConfigError(f"{_one_line(e)} (MultiTaskTrainer.load(..., task_losses=...))") from None
    with np.load(os.path.join(logdir, _DATA_FILE)) as saved:
      split = lambda name, names: Files(saved[f"{name}/paths"].astype(object),
                                        {n: saved[f"{name}/{n}"] for n in names})
      train, val = (split(s, [t.name for t in tasks]) for s in ("train", "val"))
      downstream = split(DOWNSTREAM, [DOWNSTREAM]) if f"{DOWNSTREAM}/paths" in saved else None
    backbone_dir = os.path.join(logdir, _BACKBONE_DIR)
    module = backbones.load_module(backbone_dir) if os.path.isdir(backbone_dir) else None
    num_files = sum(len(f) for f in (train, val, downstream) if f is not None)
    decode = _cache_if_small(decoder(config.images), num_files,
                             (*config.images.imshape, config.images.num_channels))
    if run_info.get("user_modules") and not set(run_info["user_modules"]) <= set(user_modules):
      missing = sorted(set(run_info["user_modules"]) - set(user_modules))
      raise ConfigError(f"{logdir!r} was trained with a user's {', '.join(missing)} that could "
                        f"not be saved: pass them to MultiTaskTrainer.load")
    setup = build_lib.build_setup(config, tasks, backbone=module, heads=user_modules.get("heads"),
                                  model=user_modules.get("model"),
                                  steps_per_epoch=_sampler(config, tasks, train).steps_per_epoch)
    inputs = Inputs(config, tasks, train, val, downstream,
                    tuple(run_info.get("downstream_classes", ())), module, None, decode, setup,
                    user_modules)
    trainer = cls.from_inputs(logdir, inputs, _mesh(mesh, strategy), write=False)
    checkpoints = Checkpointer(logdir, config.keep_checkpoints)
    try:
      state = checkpoints.restore(trainer._state, trainer._run_info())
    finally:
      checkpoints.close()
    if state is None:
      raise ConfigError(f"no checkpoint in {logdir!r} to load; fit or save the trainer first")
    trainer._state = state
    return trainer

  # --------------------------------------------------------------------------------------------
  # Construction.

  def _start(self, logdir: str, inputs: Inputs, mesh) -> None:
    config, images = inputs.config, inputs.config.images
    self.logdir = logdir
    self.config = config
    self.tasks = inputs.tasks
    self._inputs = inputs
    self._mesh = mesh
    input_shape = (*images.imshape, images.num_channels)
    self._decode = decoder(images)  # for predict: new files are not kept
    self._sampler = _sampler(config, inputs.tasks, inputs.train)
    self._setup = inputs.setup
    example = np.zeros((1, *input_shape), np.float32)
    self._train_data = data_lib.StreamData(self._train_batches, example,
                                            self._sampler.steps_per_epoch)
    self._eval_fn = train_lib.make_eval_fn(self._setup, mesh)
    self._predict_fn = _make_predict_fn(self._setup, mesh)
    self._state = train_lib.create_train_state(self._setup, config.seed, example, mesh,
                                               inputs.backbone_variables)

  def _train_batches(self, steps: Sequence[int]):
    images = self.config.images
    return data_lib.image_batches(self._inputs.train.paths, self._inputs.train.labels,
                                  self._sampler, steps, self._inputs.decode, mesh=self._mesh,
                                  num_workers=images.num_workers)

  def _run_info(self, config: ml_collections.ConfigDict | None = None) -> dict:
    info = {"tasks": [t.to_json() for t in self.tasks],
            "config": _jsonable((config or self.config).to_dict()),
            "data_digest": _data_digest(self._inputs),
            "user_modules": sorted(self._inputs.user_modules)}
    if self._inputs.downstream is not None:
      info["downstream_classes"] = Task(DOWNSTREAM, classes=self._inputs.downstream_classes
                                        ).to_json()["classes"]
    return info

  def _check_logdir(self) -> None:
    """ConfigError if `logdir` holds a run of other tasks, configuration or data."""
    path = os.path.join(self.logdir, _RUN_FILE)
    if not os.path.isfile(path):
      return
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    current = self._run_info()
    allowed = _EVERY_RUN + (tuple(current["config"]) if self.config.allow_config_change else ())
    strip = lambda config: {k: v for k, v in config.items() if k not in allowed}
    differences = validate.config_changes(
        {**saved, "config": strip(saved.get("config", {}))},
        {**current, "config": strip(current["config"])}, "run",
        defaults={**current, "config": validate.default_values()})
    if differences:
      raise ConfigError(f"{self.logdir!r} holds another run ({'; '.join(differences)}); use "
                        "another logdir, or MultiTaskTrainer.load to continue that one")

  def _write_run(self) -> None:
    """The files `load` reads: run.json, the backbone's module and the data; refused (one
    ConfigError) while another run holds the logdir."""
    with workdir_lock.hold(self.logdir, is_lead=jax.process_index() == 0):
      if jax.process_index() == 0:
        self._write_run_files()

  def _write_run_files(self) -> None:
    os.makedirs(self.logdir, exist_ok=True)
    if self._inputs.backbone is not None:
      backbones.save_module(os.path.join(self.logdir, _BACKBONE_DIR), self._inputs.backbone)
    if self._inputs.user_modules:
      predictor.save_user_modules(self.logdir, self._inputs.user_modules)
    arrays = {}
    for name in ("train", "val", DOWNSTREAM):
      files = getattr(self._inputs, name)
      if files is not None:
        arrays[f"{name}/paths"] = np.asarray(files.paths, dtype=str)
        arrays.update({f"{name}/{task}": y for task, y in files.labels.items()})
    tmp = os.path.join(self.logdir, _DATA_FILE + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(self.logdir, _DATA_FILE))
    atomic.write_json(os.path.join(self.logdir, _RUN_FILE), self._run_info())

  # --------------------------------------------------------------------------------------------
  # Training and evaluation.

  @property
  def step(self) -> int:
    """Train steps taken."""
    return int(self._state.step)

  @property
  def steps_per_epoch(self) -> int:
    return self._sampler.steps_per_epoch

  @property
  def state(self) -> train_lib.TrainState:
    """The current TrainState. The next `fit` donates its arrays: copy what you keep."""
    return self._state

  @property
  def fcn(self) -> tuple[nn.Module, dict]:
    """The backbone as a `(module, variables)` pair, trained or not; host copies for reuse."""
    if self._inputs.backbone is None:
      raise ConfigError("this trainer was given a whole model=, not a backbone fcn")
    return self._inputs.backbone, backbones.to_host(backbones.extract(self._state.variables))

  def fit(self, epochs: int = 1) -> dict[str, float]:
    """Trains `epochs` more epochs, evaluating and checkpointing after each; returns
    `evaluate()` (also written to `final_metrics.json`).

    A checkpoint in the logdir ahead of the trainer (a run of the same script that stopped
    midway) is resumed from.
    """
    if epochs < 0:
      raise ConfigError(f"epochs must be >= 0, got {epochs}")
    return self.fit_to(self.step + epochs * self.steps_per_epoch)

  def fit_to(self, num_steps: int) -> dict[str, float]:
    """Trains up to step `num_steps`; see `fit`."""
    config = copy.deepcopy(self.config)
    config.num_steps = num_steps
    try:
      self._state, final = train_lib.run(
          config, self.logdir, self._setup, self._train_data, self._state, mesh=self._mesh,
          run_info=self._run_info(config), evaluate_periodic=self._evaluate,
          evaluate_final=self._evaluate)
    except BaseException:
      if any(leaf.is_deleted() for leaf in jax.tree.leaves(self._state)):
        self._state = self._latest_state()  # the state was donated to a step that failed
      raise
    self.config = config
    return final

  def _latest_state(self) -> train_lib.TrainState:
    """The logdir's latest checkpoint, or the initial state if there is none."""
    example = self._train_data.example_inputs()
    fresh = train_lib.create_train_state(self._setup, self.config.seed, example, self._mesh,
                                         self._inputs.backbone_variables)
    checkpoints = Checkpointer(self.logdir, self.config.keep_checkpoints)
    try:
      return checkpoints.restore(fresh, self._run_info()) or fresh
    finally:
      checkpoints.close()

  def evaluate(self) -> dict[str, float]:
    """{"val/<task>/<metric>": ..., "val/downstream/accuracy": ..., "weight/<task>": ...}."""
    return {**self._evaluate(self._state),
            **metrics_lib.weight_metrics(self._state.task_weights, self.tasks)}

  def _evaluate(self, state: train_lib.TrainState) -> dict[str, float]:
    val = self._inputs.val
    batches = data_lib.eval_image_batches(val.paths, val.labels, self.config.eval_batch_size,
                                          self._inputs.decode, mesh=self._mesh,
                                          num_workers=self.config.images.num_workers)
    metrics = train_lib.evaluate(self._eval_fn, state, batches, self._mesh, "val")
    if self._inputs.downstream is not None:
      files = self._inputs.downstream
      features = self._outputs(state, files.paths, self._inputs.decode)["representation"]
      metrics[f"val/{DOWNSTREAM}/accuracy"] = probe_lib.probe_accuracy(
          features, files.labels[DOWNSTREAM])
    return metrics

  def _outputs(self, state: train_lib.TrainState, paths: Sequence[str], decode) -> dict:
    """{task: the model's output f32[N, ...], "representation": f32[N, D]}."""
    batches = data_lib.eval_image_batches(paths, {}, self.config.eval_batch_size, decode,
                                          mesh=self._mesh,
                                          num_workers=self.config.images.num_workers)
    sharding = sharding_lib.batch_sharding(self._mesh)
    variables, parts = state.variables, []
    for local in batches:
      parts.append(jax.device_get(self._predict_fn(
          variables, sharding_lib.put_global(local["inputs"], sharding))))
    return {k: np.concatenate([p[k] for p in parts])[:len(paths)] for k in parts[0]}

  def predict(self, data: pd.DataFrame | Sequence[str] | str) -> pd.DataFrame:
    """Predictions for image files: a DataFrame with the file-path column, then per task its
    predicted class name (regression: the value) and "<task>/<class>" probabilities.

    Args:
      data: file paths, or a DataFrame with the file-path column (`filepaths`).

    Raises:
      ConfigError: the column is missing, or files are missing or cannot be decoded.
    """
    filepaths = self.config.images.filepaths
    if isinstance(data, pd.DataFrame):
      if filepaths not in data.columns:
        raise ConfigError(f"the file path column {filepaths!r} is not a column of the "
                          f"DataFrame; columns: {list(data.columns)}")
      paths = [os.fspath(p) for p in data[filepaths]]
    else:
      paths = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [
          os.fspath(p) for p in data]
    bad = data_lib.find_bad_files(paths, self.config.images.num_workers, decode=self._decode)
    if bad:
      raise ConfigError(f"{len(bad)} of {len(paths)} image files are missing or cannot be "
                        f"decoded: {validate.name_bad_files(bad, BAD_FILES_SHOWN)}")
    frame = pd.DataFrame({filepaths: paths})
    if not paths:
      return frame
    outputs = self._outputs(self._state, paths, self._decode)
    for task in self.tasks:
      for column, values in task.predictions(outputs[task.name]).items():
        frame[column] = list(values) if np.ndim(values) > 1 else values
    return frame

  def save(self) -> None:
    """Checkpoints the current state (and rewrites run.json) so `load` finds it."""
    self._write_run()
    checkpoints = Checkpointer(self.logdir, self.config.keep_checkpoints)
    try:
      if checkpoints.latest_step() != self.step:
        checkpoints.save(self.step, self._state, self._run_info())
        checkpoints.wait()
    finally:
      checkpoints.close()


def _make_predict_fn(setup: build_lib.Setup, mesh):
  """jit(variables, inputs) -> {task: output, "representation": f32[B, D]}."""

  def run(variables, inputs):
    out = {"representation": models_base.features(setup.model, variables, inputs)}
    out.update(setup.model.apply(variables, inputs, train=False))
    return out

  replicated = sharding_lib.replicated(mesh)
  return jax.jit(run, in_shardings=(replicated, sharding_lib.batch_sharding(mesh)),
                 out_shardings=replicated)


def _mesh(mesh, strategy):
  if mesh is not None and strategy is not None and mesh is not strategy:
    raise ConfigError("give mesh or strategy (the same thing), not both")
  mesh = mesh if mesh is not None else strategy
  if mesh is None:
    return sharding_lib.make_mesh()
  if not isinstance(mesh, jax.sharding.Mesh):
    raise ConfigError(f"mesh/strategy must be a jax.sharding.Mesh, got {type(mesh).__name__}")
  return mesh


# ----------------------------------------------------------------------------------------------
# From a config file.


def read_csv(path: str, key: str) -> pd.DataFrame:
  """The CSV at `path`; ConfigError naming `key` if it cannot be read."""
  try:
    return pd.read_csv(path)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{key}={path!r}: {type(e).__name__}: {_one_line(e)}") from None


def train_from_config(config: ml_collections.ConfigDict, workdir: str, *,
                      mesh=None) -> dict[str, float]:
  """Trains `config` (dataset.name "images") in `workdir`; returns the final metrics.

  Reads `config.images.train_csv`/`val_csv`, or (if not given) first draws
  `config.images.generate_shapes` images with `mtl_jax.data.make_shapes` into
  `<workdir>/shapes` (kept for reruns). The backbone is `config.model.backbone_path` or the
  spec `config.model.backbone`. Trains `num_epochs` epochs (or `num_steps` steps), logging,
  evaluating and checkpointing every `log_every`/`eval_every`/`checkpoint_every` steps;
  rerunning resumes from the latest checkpoint.
  """
  config = config_lib.complete(config)
  mesh = _mesh(mesh, None)
  config_lib.validate(config, num_devices=mesh.size)
  images = config.images
  train_csv, val_csv = images.train_csv, images.val_csv
  if not train_csv:
    if images.generate_shapes <= 0:
      raise ConfigError("config.images.train_csv is required (or "
                        "config.images.generate_shapes > 0 to draw a shapes dataset)")
    train_csv, val_csv = _generated_shapes(config, workdir)
  elif not val_csv:
    raise ConfigError("config.images.val_csv is required with config.images.train_csv")
  train = read_csv(train_csv, "config.images.train_csv")
  val = read_csv(val_csv, "config.images.val_csv")
  downstream = None
  if images.downstream_csv:
    frame = read_csv(images.downstream_csv, "config.images.downstream_csv")
    if frame.shape[1] != 2:
      raise ConfigError("config.images.downstream_csv needs two columns, file path and label; "
                        f"it has {list(frame.columns)}")
    downstream = dict(zip(frame.iloc[:, 0], frame.iloc[:, 1]))
  fcn = config.model.backbone_path or config.model.backbone
  if not fcn:
    raise ConfigError("config.model.backbone (a layer spec) or config.model.backbone_path is "
                      "required")
  inputs = prepare(config, train, val, fcn, downstream, mesh, epoch_frequencies=False)
  trainer = MultiTaskTrainer.from_inputs(workdir, inputs, mesh)
  if config.num_epochs:
    return trainer.fit(config.num_epochs)
  return trainer.fit_to(config.num_steps)


def _generated_shapes(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, str]:
  directory = os.path.join(workdir, "shapes")
  paths = tuple(os.path.join(directory, f"{s}_labels.csv") for s in ("train", "val"))
  if not all(os.path.isfile(p) for p in paths):
    paths = data_lib.make_shapes(directory, config.images.generate_shapes,
                                 seed=config.dataset.split_seed,
                                 imshape=tuple(config.images.imshape))
  return paths
