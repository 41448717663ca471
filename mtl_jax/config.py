"""The configuration schema and its validation, shared by the CLI and the Python API.

`default_config()` holds every key with a typed default; config files in `configs/` start from
it and override a few fields. `validate()` turns every mistake into one `ConfigError` whose
message names the offending key, so `main.py` can print one line and exit 2.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


class ConfigError(ValueError):
  """A configuration or input mistake the user can fix; printed as one line."""


def default_config() -> ml_collections.ConfigDict:
  """Every key the library reads, with its default."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "digits"            # a built-in dataset: see mtl_jax.data.BUILTIN
  c.dataset.split_seed = 0             # the train/val/test split is a function of this
  c.dataset.missing_fraction = 0.0     # blank this fraction of each task's training labels
  c.dataset.data_on_device = True      # in-memory data: keep it on the devices, index on device
  c.tasks = ()                         # which of the dataset's tasks to train; () = all

  c.model = ml_collections.ConfigDict()
  c.model.backbone = ()                # layer spec of the backbone, e.g. (256,)
  c.model.shared_layers = (256,)       # layer spec of the shared trunk after the backbone
  c.model.task_layers = (64,)          # layer spec of every head's hidden layers
  c.model.dropout_rate = 0.0           # rate of every "d" layer

  c.weighting = "equal"                # a name registered in mtl_jax.weighting
  c.weighting_kwargs = ml_collections.ConfigDict()  # hyper-parameters of that method
  c.task_weights = config_dict.placeholder(tuple)   # fixed weights: selects `manual`

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"            # adam | adamw | sgd
  c.optimizer.learning_rate = 2e-3
  c.optimizer.momentum = 0.9           # sgd only
  c.optimizer.nesterov = False         # sgd only
  c.optimizer.weight_decay = 0.0       # decoupled for adamw, added to the gradient for sgd/adam
  c.optimizer.schedule = "cosine"      # constant | cosine
  c.optimizer.warmup_steps = 0
  c.optimizer.grad_clip_norm = 0.0     # 0 = no clipping

  c.batch_size = 128                   # global batch, split over every device
  c.eval_batch_size = 512
  c.num_steps = 2000
  c.steps_per_dispatch = 50            # train steps run by one jit call (lax.scan)
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  return c


_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("constant", "cosine")


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
    if key == "weighting_kwargs":
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
  for key in ("backbone", "shared_layers", "task_layers"):
    try:
      models.parse_spec(config.model[key])
    except ValueError as e:
      raise ConfigError(f"config.model.{key}: {e}") from None
  name = weighting_name(config)
  if name not in weighting.REGISTRY:
    raise ConfigError(f"unknown config.weighting {name!r}; known: {sorted(weighting.REGISTRY)}")


def weighting_name(config: ml_collections.ConfigDict) -> str:
  """`manual` when fixed task weights are given, else `config.weighting`."""
  if config.task_weights is not None and config.weighting == "equal":
    return "manual"
  return config.weighting


def weighting_kwargs(config: ml_collections.ConfigDict) -> dict:
  kwargs = dict(config.weighting_kwargs.to_dict())
  if config.task_weights is not None:
    kwargs["weights"] = tuple(float(w) for w in config.task_weights)
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
    if key == "weighting_kwargs":
      continue  # free-form: checked by the weighting method's own signature
    value, ref = config[key], reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        raise ConfigError(f"{prefix}.{key} must be a ConfigDict, got {type(value).__name__}")
      _check_known_keys(value, ref, f"{prefix}.{key}")
