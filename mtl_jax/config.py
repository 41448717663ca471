"""The configuration schema and its validation, shared by the CLI and the Python API.

`default_config()` holds every key with a typed default; config files in `configs/` start from
it and override a few fields. `validate()` turns every mistake into one `ConfigError` whose
message names the offending key, so `main.py` can print one line and exit 2.
"""

from __future__ import annotations

import math

import ml_collections
from ml_collections import config_dict

from mtl_jax.errors import ConfigError  # re-exported: `mtl_jax.config.ConfigError`


def default_config() -> ml_collections.ConfigDict:
  """Every key the library reads, with its default."""
  c = ml_collections.ConfigDict()
  c.seed = 0                           # an int >= 0: initialisation, data order, dropout
  c.notes = ""                         # free text, saved in run.json and shown in TensorBoard

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "digits"            # a built-in (mtl_jax.data.BUILTIN, "tfds" too) or "images"
  c.dataset.split_seed = 0             # the train/val/test split is a function of this
  c.dataset.missing_fraction = 0.0     # blank this fraction of each task's training labels
  c.dataset.path = ""                  # mnist: the .npz to read; "" = TFDS `mnist`; nyuv2: root
  c.dataset.ignore_index = -1          # nyuv2: the label value of unlabelled pixels (-> -1)
  c.dataset.flatten = False            # mnist, tfds: images [N, H, W, C] -> vectors [N, H*W*C]
  c.dataset.normalize = ()             # mnist, tfds: (mean, std): inputs become (x - mean) / std
  # dataset.name = "dense_shapes": generated scenes for the per-pixel tasks, drawn in memory
  # (mtl_jax/data/dense_shapes.py); make_dense_shapes writes the same as NYUv2-layout files.
  c.dataset.dense_shapes = ml_collections.ConfigDict()
  c.dataset.dense_shapes.num_train = 400   # scenes in the train split
  c.dataset.dense_shapes.num_val = 100     # scenes in the val split
  c.dataset.dense_shapes.num_test = 100    # scenes in the test split
  c.dataset.dense_shapes.size = (64, 64)   # (height, width)
  c.dataset.dense_shapes.max_shapes = 3    # shapes per scene, at most
  c.dataset.data_on_device = True      # in-memory data: keep it on the devices, index on device
  c.tasks = ()                         # which of the dataset's tasks to train; () = all

  # dataset.name = "tfds": a TFDS dataset read into memory (mtl_jax/data/tfds_source.py);
  # data_dir, download and max_examples also serve mnist without a path.
  c.dataset.tfds = ml_collections.ConfigDict()
  c.dataset.tfds.name = ""             # the TFDS builder, e.g. "celeb_a", "mnist" ("mnist:3.0.1")
  c.dataset.tfds.data_dir = ""         # where TFDS keeps prepared data; "" = TFDS's default
  c.dataset.tfds.download = True       # download and prepare a dataset missing from data_dir
  c.dataset.tfds.train_split = "train" # the TFDS split to train on
  c.dataset.tfds.val_split = ""        # "" = val_fraction of train_split, drawn by split_seed
  c.dataset.tfds.val_fraction = 0.1   # without val_split: this fraction of train_split
  c.dataset.tfds.test_split = "test"  # the TFDS split of the final test metrics
  c.dataset.tfds.image = "image"       # the input feature: images [H, W, C] (or [H, W])
  c.dataset.tfds.image_size = ()       # (height, width) to resize images to; () = as stored
  c.dataset.tfds.max_examples = 0      # read the first N examples of each split; 0 = all
  # {task: feature path}, e.g. {"digit": "label"}; "attributes/*" is one task per feature
  # under `attributes`, named after it (CelebA's 40 binary attributes).
  c.dataset.tfds.task_features = ml_collections.ConfigDict()
  # {task or task_features key: kind}; default by dtype: bool binary, float regression,
  # ints and ClassLabels classification.
  c.dataset.tfds.task_types = ml_collections.ConfigDict()

  # dataset.name = "images": image files listed in CSVs, trained by mtl_jax.trainer.
  c.images = ml_collections.ConfigDict()
  c.images.train_csv = ""              # a file-path column + one column per task; "" = generate
  c.images.val_csv = ""                # the same columns; empty cells are missing labels
  c.images.generate_shapes = 0         # no train_csv: draw this many make_shapes images first
  c.images.filepaths = "filepath"      # the name of the file-path column
  c.images.task_types = ml_collections.ConfigDict()  # {task: kind}; default "classification"
  c.images.task_losses = ml_collections.ConfigDict()  # {task: loss name}, e.g. {"x": "huber"}
  c.images.imshape = (64, 64)          # (height, width) every image is resized to
  c.images.num_channels = 3            # channels every image is decoded to
  c.images.norm = 255.0                # pixel values are divided by this
  c.images.single_channel = False      # read one channel and repeat it num_channels times
  c.images.balance_probs = True        # resample each epoch so every task gets as many labels
  c.images.shuffle = True              # False: each epoch's examples in file order
  c.images.num_workers = 4             # decoding threads
  c.images.skip_bad_files = False      # drop unreadable files with a warning (else an error)
  c.images.downstream_csv = ""         # filepath,label CSV: linear-probe accuracy at each eval

  c.model = ml_collections.ConfigDict()
  c.model.name = "hps"                 # an architecture registered in mtl_jax.models
  c.model.kwargs = ml_collections.ConfigDict()  # its hyper-parameters beyond the specs below
  c.model.backbone = ()                # layer spec of the backbone, e.g. (256,)
  c.model.shared_layers = (256,)       # layer spec of the shared trunk after the backbone
  c.model.task_layers = (64,)          # layer spec of every head's hidden layers
  c.model.dropout_rate = 0.0           # rate of every "d" layer
  c.model.global_pooling = "max"       # how heads pool image features: max | average
  c.model.backbone_path = ""           # a backbone saved by mj.save_backbone replaces the spec
  c.model.train_backbone = True        # False: the backbone is frozen (inference mode, no grad)

  c.augment = ml_collections.ConfigDict()  # on-device image augmentation (mtl_jax.augment)
  # On-device augmentation of images and their label maps together (mtl_jax.augment_dense):
  c.dense_augment = ml_collections.ConfigDict()
  c.dense_augment.flip_left_right = False  # mirror image and maps with probability 1/2
  c.dense_augment.scales = ()          # crop 1/s of the image, s one of these, e.g. (1, 1.2, 1.5)

  c.weighting = "equal"                # a name registered in mtl_jax.weighting
  c.weighting_kwargs = ml_collections.ConfigDict()  # hyper-parameters of that method
  c.task_weights = config_dict.placeholder(tuple)   # fixed weights: selects `manual`
  # Per-task gradient norms and cosines in TensorBoard every log step. Gradient methods always
  # log them (they compute the Gram matrix anyway); loss-based methods then pay for the
  # per-task gradients. weighting_kwargs.grad_wrt = "params" | "rep" picks what is differentiated.
  c.grad_diagnostics = False

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"            # adam | adamw | sgd
  c.optimizer.learning_rate = 2e-3     # the peak rate of the schedule
  c.optimizer.momentum = 0.9           # sgd only
  c.optimizer.nesterov = False         # sgd only
  c.optimizer.weight_decay = 0.0       # decoupled for adamw, added to the gradient for sgd/adam
  c.optimizer.schedule = "constant"    # constant | cosine (to 0 at num_steps) | exponential
  c.optimizer.half_life = 0.0          # exponential: steps over which the rate halves
  c.optimizer.staircase = False        # exponential: halve at once every half_life steps
  c.optimizer.warmup_steps = 0         # linear warm-up from 0 over this many steps
  c.optimizer.grad_clip_norm = 0.0     # 0 = no clipping

  c.batch_size = 128                   # global batch, split over every device
  c.eval_batch_size = 512              # batch of evaluation (the last one padded)
  c.num_steps = 2000                   # train steps in all (a rerun resumes up to it)
  c.num_epochs = 0                     # > 0: train this many epochs instead of num_steps
  c.steps_per_dispatch = 50            # train steps run by one jit call (lax.scan)
  c.log_every = 100                    # steps between TensorBoard scalars and plain lines
  c.eval_every = 500                   # steps between validation evaluations
  c.checkpoint_every = 500             # steps between checkpoints (and at the end)
  c.keep_checkpoints = 3               # the newest checkpoints kept
  c.best_metric = ""                   # e.g. "val/digit/accuracy": also keep its best state
  c.allow_config_change = False        # resume a workdir whose checkpoints have another config
  return c


def parse_options(arg: str | None) -> dict[str, str]:
  """A config file's options after ":", "runlocal,missing=0.4" -> {"runlocal": "1",
  "missing": "0.4"}: each file pops what it knows and refuses what is left."""
  return dict(item.split("=", 1) if "=" in item else (item, "1")
              for item in (arg or "").split(",") if item)


_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("constant", "cosine", "exponential")
_POOLINGS = ("max", "average")
IMAGES = "images"
TFDS = "tfds"


# Blocks whose keys are free-form, checked by their readers (the weighting method's signature,
# mtl_jax.augment.resolve, the task names).
_FREE_FORM = ("weighting_kwargs", "augment", "task_types", "task_losses", "kwargs",
              "task_features")


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def complete(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`default_config()` updated with `config`; raises ConfigError on an unknown key."""
  _check_known_keys(config, default_config())
  full = default_config()
  _merge_into(full, config)
  return full


def _merge_into(target: ml_collections.ConfigDict, source) -> None:
  for key in source.keys():
    value = source[key]
    if key in _FREE_FORM:
      target[key] = ml_collections.ConfigDict(dict(value))
    elif isinstance(value, (ml_collections.ConfigDict, dict)):
      _merge_into(target[key], value)
    else:
      try:
        target[key] = value
      except TypeError as e:
        raise ConfigError(f"config.{key}: {e}") from None


def validate(config: ml_collections.ConfigDict, *, num_devices: int) -> None:
  """Raises ConfigError naming the first invalid key of a `complete` config."""
  from mtl_jax import models, weighting  # pylint: disable=import-outside-toplevel

  for key in ("batch_size", "eval_batch_size", "num_steps", "steps_per_dispatch",
              "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    _require(config[key] > 0, f"config.{key} must be positive, got {config[key]}")
  for key in ("batch_size", "eval_batch_size"):
    _require(config[key] % num_devices == 0,
             f"config.{key}={config[key]} does not divide over the {num_devices} devices")
  _require(0.0 <= config.dataset.missing_fraction < 1.0,
           f"config.dataset.missing_fraction must be in [0, 1), "
           f"got {config.dataset.missing_fraction}")
  _require(0.0 <= config.model.dropout_rate < 1.0,
           f"config.model.dropout_rate must be in [0, 1), got {config.model.dropout_rate}")
  _require(config.optimizer.name in _OPTIMIZERS,
           f"unknown config.optimizer.name {config.optimizer.name!r}; known: {_OPTIMIZERS}")
  _require(config.optimizer.schedule in _SCHEDULES,
           f"unknown config.optimizer.schedule {config.optimizer.schedule!r}; "
           f"known: {_SCHEDULES}")
  _require(config.optimizer.learning_rate > 0, "config.optimizer.learning_rate must be > 0")
  _validate_optimizer_values(config.optimizer)
  _require(isinstance(config.seed, int) and config.seed >= 0,
           f"config.seed must be an int >= 0, got {config.seed!r}")
  task_weights(config)  # raises on a malformed or non-finite weight
  _require(config.optimizer.schedule != "exponential" or config.optimizer.half_life > 0,
           "config.optimizer.half_life must be > 0 for the exponential schedule")
  _require(config.num_epochs >= 0, f"config.num_epochs must be >= 0, got {config.num_epochs}")
  _require(config.model.global_pooling in _POOLINGS,
           f"config.model.global_pooling must be one of {_POOLINGS}, "
           f"got {config.model.global_pooling!r}")
  _validate_augment(config)
  if config.dataset.name == IMAGES:
    _validate_images(config.images)
  if config.dataset.name == TFDS:
    _validate_tfds(config.dataset.tfds)
  _require(config.dataset.tfds.max_examples >= 0,  # read by mnist too
           f"config.dataset.tfds.max_examples must be >= 0, "
           f"got {config.dataset.tfds.max_examples}")
  for key in ("backbone", "shared_layers", "task_layers"):
    try:
      models.parse_spec(config.model[key])
    except ValueError as e:
      raise ConfigError(f"config.model.{key}: {e}") from None
  if config.model.name not in models.REGISTRY:
    raise ConfigError(f"unknown config.model.name {config.model.name!r}; "
                      f"known: {sorted(models.REGISTRY)}")
  name = weighting_name(config)
  if name not in weighting.REGISTRY:
    raise ConfigError(f"unknown config.weighting {name!r}; known: {sorted(weighting.REGISTRY)}")


def _validate_optimizer_values(optimizer: ml_collections.ConfigDict) -> None:
  """Values that would train garbage silently rather than fail."""
  for key in ("weight_decay", "grad_clip_norm", "warmup_steps", "half_life"):
    _require(math.isfinite(optimizer[key]) and optimizer[key] >= 0,
             f"config.optimizer.{key} must be a finite number >= 0, got {optimizer[key]}")
  _require(0.0 <= optimizer.momentum < 1.0,
           f"config.optimizer.momentum must be in [0, 1), got {optimizer.momentum}")


def _validate_augment(config: ml_collections.ConfigDict) -> None:
  from mtl_jax import augment, augment_dense  # pylint: disable=import-outside-toplevel
  try:
    augment.resolve(config.augment.to_dict())
  except ValueError as e:
    raise ConfigError(f"config.augment: {e}") from None
  try:
    augment_dense.check_options(**config.dense_augment.to_dict())
  except ValueError as e:
    raise ConfigError(f"config.dense_augment.{e}") from None


def _validate_images(images: ml_collections.ConfigDict) -> None:
  """The `config.images` block; the CSVs and files are checked when they are read."""
  shape = tuple(images.imshape)
  _require(len(shape) == 2 and all(isinstance(d, int) and d > 0 for d in shape),
           f"config.images.imshape must be two positive ints (height, width), got {shape}")
  _require(images.num_channels > 0,
           f"config.images.num_channels must be positive, got {images.num_channels}")
  _require(images.norm > 0, f"config.images.norm must be > 0, got {images.norm}")
  _require(images.num_workers > 0,
           f"config.images.num_workers must be positive, got {images.num_workers}")


def _validate_tfds(tfds: ml_collections.ConfigDict) -> None:
  """The `config.dataset.tfds` block; features and splits are checked against the dataset."""
  from mtl_jax import tasks  # pylint: disable=import-outside-toplevel
  key = "config.dataset.tfds"
  for name in ("name", "image", "train_split", "test_split"):
    _require(isinstance(tfds[name], str) and tfds[name] != "",
             f"{key}.{name} must be set for config.dataset.name='tfds'")
  _require(len(tfds.task_features) > 0,
           f"{key}.task_features must map task names to features, e.g. {{'digit': 'label'}}")
  for task, path in tfds.task_features.items():
    stem = path[:-2] if isinstance(path, str) and path.endswith("/*") else path
    _require(isinstance(stem, str) and stem != "" and "*" not in stem,
             f"{key}.task_features.{task} must be a feature path ('label', "
             f"'attributes/*'), got {path!r}")
  for task, kind in tfds.task_types.items():
    _require(kind in tasks.KINDS,
             f"{key}.task_types.{task} must be one of {sorted(tasks.KINDS)}, got {kind!r}")
  size = tuple(tfds.image_size)
  _require(size == () or (len(size) == 2 and all(isinstance(d, int) and d > 0 for d in size)),
           f"{key}.image_size must be () or two positive ints (height, width), got {size}")
  _require(bool(tfds.val_split) or 0.0 < tfds.val_fraction < 1.0,
           f"{key}.val_fraction must be in (0, 1) when val_split is '', "
           f"got {tfds.val_fraction}")


def weighting_name(config: ml_collections.ConfigDict) -> str:
  """`manual` when fixed task weights are given, else `config.weighting`."""
  if config.task_weights is not None and config.weighting == "equal":
    return "manual"
  return config.weighting


def task_weights(config: ml_collections.ConfigDict) -> tuple[float, ...] | None:
  """`config.task_weights` as finite floats (None if unset); the command line gives a string
  such as "(1, 0.5)" or "1,0.5" (nan and inf included, which are refused)."""
  given = config.task_weights
  if given is None:
    return None
  if isinstance(given, str) or all(isinstance(w, str) for w in given):  # from a flag
    text = given if isinstance(given, str) else ",".join(given)
    items = text.strip().strip("()[]").split(",")
  else:
    items = given
  try:
    weights = tuple(float(w) for w in items if not isinstance(w, str) or w.strip())
  except (TypeError, ValueError):
    raise ConfigError(f"config.task_weights must be numbers, e.g. (1.0, 0.5), "
                      f"got {given!r}") from None
  _require(weights and all(math.isfinite(w) for w in weights),
           f"config.task_weights must be finite numbers, got {given!r}")
  return weights


def weighting_kwargs(config: ml_collections.ConfigDict) -> dict:
  kwargs = dict(config.weighting_kwargs.to_dict())
  if config.task_weights is not None:
    kwargs["weights"] = task_weights(config)
  return kwargs


def select_tasks(config: ml_collections.ConfigDict, available: tuple[str, ...]) -> tuple[str, ...]:
  """The task names to train, in the dataset's order unless `config.tasks` orders them."""
  if not config.tasks:
    return tuple(available)
  items = (config.tasks,) if isinstance(config.tasks, str) else config.tasks
  # "--config.tasks=digit,parity" on the command line arrives as one comma-separated string.
  requested = tuple(name.strip() for item in items for name in str(item).split(",")
                    if name.strip())
  for name in requested:
    if name not in available:
      raise ConfigError(f"unknown task {name!r} in config.tasks; the dataset has {available}")
  _require(len(set(requested)) == len(requested), f"config.tasks repeats a task: {requested}")
  return requested


def _check_known_keys(config, reference, prefix="config") -> None:
  """Rejects keys the library would silently ignore (a typo in a config file)."""
  for key in config.keys():
    if key not in reference:
      raise ConfigError(f"unknown key {prefix}.{key}")
    if key in _FREE_FORM:
      continue  # free-form: checked by the method that reads it
    value, ref = config[key], reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"{prefix}.{key} must be a ConfigDict, got {type(value).__name__}")
      _check_known_keys(value, ref, f"{prefix}.{key}")
