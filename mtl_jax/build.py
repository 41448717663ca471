"""A run's static pieces from its configuration: model, optimizer, weighting, augmentation.

`build_setup` is shared by `train_and_evaluate` and the image `MultiTaskTrainer`: the model is
`config.model.name` from `mtl_jax.models.REGISTRY` (or the user's `model=`, or the user's
`backbone=`/`heads=` in hard parameter sharing), the weighting `config.weighting` from
`mtl_jax.weighting.REGISTRY`. Every mistake is a `ConfigError` naming its key.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mtl_jax import augment as augment_lib
from mtl_jax import augment_dense
from mtl_jax import config as config_lib
from mtl_jax import models
from mtl_jax import optim
from mtl_jax import weighting as weighting_lib
from mtl_jax.errors import ConfigError
from mtl_jax.models import base
from mtl_jax.tasks import Task

GRAD_WRT = ("params", "rep")


@dataclasses.dataclass(frozen=True)
class Setup:
  """The static pieces of a run: model, optimizer, weighting, tasks and augmentation.

  `augment(key, inputs) -> inputs` (or None) runs inside the train step, on the devices,
  never at evaluation; `augment_labels(key, inputs, labels) -> (inputs, labels)` (or None)
  before it, moving label maps with the image (`mtl_jax.augment_dense`). `grad_wrt`: what
  per-task gradients are taken of, "params" (the shared parameters) or "rep" (the shared
  representation), or None when no method needs them.
  """
  model: nn.Module
  tx: optax.GradientTransformation
  weighting: weighting_lib.Weighting
  tasks: tuple[Task, ...]
  augment: augment_lib.AugmentFn | None = None
  grad_wrt: str | None = None
  augment_labels: augment_dense.DenseAugmentFn | None = None

  @property
  def task_names(self) -> tuple[str, ...]:
    return tuple(t.name for t in self.tasks)


def build_setup(config: ml_collections.ConfigDict, tasks: Sequence[Task], *,
                backbone: nn.Module | None = None,
                heads: Mapping[str, nn.Module] | None = None, model: nn.Module | None = None,
                steps_per_epoch: int | None = None) -> Setup:
  """Model, optimizer, weighting and augmentation for `tasks` as `config` describes them.

  `model` (a whole module meeting `mtl_jax.models.base`'s contract) replaces
  `config.model.name`; `backbone` and `heads` are a user's modules inside it.
  """
  tasks = tuple(tasks)
  model = build_model(config, tasks, backbone=backbone, heads=heads, model=model)
  tx = optim.make_optimizer(config.optimizer, config.num_steps)
  context = {"optimizer": tx, "num_steps": config.num_steps, "steps_per_epoch": steps_per_epoch,
             "learning_rate": optim.learning_rate_schedule(config.optimizer, config.num_steps)}
  name = config_lib.weighting_name(config)
  kwargs = config_lib.weighting_kwargs(config)
  grad_wrt = kwargs.pop("grad_wrt", None)
  try:
    weighting = weighting_lib.get(name, context=context, **kwargs)
    if not weighting.grad_state:  # those are checked when the state is built
      weighting.init(tasks)
  except ValueError as e:
    raise ConfigError(f"config.weighting: {e}") from None
  grad_wrt = gradient_mode(name, weighting, grad_wrt, config.grad_diagnostics, model)
  # Pixels of 8-bit images (and of 16-bit ones, scaled alike) lie in [0, 255 / norm].
  augment = augment_lib.make_augment(config.augment.to_dict(),
                                     value_range=(0.0, 255.0 / config.images.norm))
  return Setup(model, tx, weighting, tasks, augment, grad_wrt, dense_augment(config, tasks))


# config.augment's options that move pixels, which label maps would have to follow.
GEOMETRIC = ("flip_left_right", "flip_up_down", "rot90", "zoom_scale")


def dense_augment(config: ml_collections.ConfigDict,
                  tasks: tuple[Task, ...]) -> augment_dense.DenseAugmentFn | None:
  """`config.dense_augment` for `tasks`; ConfigError when `config.augment` would move images
  away from their tasks' label maps."""
  maps = [t.name for t in tasks if augment_dense.is_map(t)]
  moving = [k for k in GEOMETRIC if config.augment.get(k)]
  if maps and moving:
    raise ConfigError(f"config.augment.{moving[0]} moves the images but not the label maps of "
                      f"{maps}; use config.dense_augment (flip_left_right, scales)")
  try:
    return augment_dense.make_dense_augment(tasks, **config.dense_augment.to_dict())
  except ValueError as e:
    raise ConfigError(f"config.dense_augment: {e}") from None


def build_model(config: ml_collections.ConfigDict, tasks: tuple[Task, ...], *,
                backbone: nn.Module | None = None,
                heads: Mapping[str, nn.Module] | None = None,
                model: nn.Module | None = None) -> nn.Module:
  """The user's `model`, or `config.model.name` built from `config.model` and the modules."""
  if model is not None:
    if backbone is not None or heads is not None:
      raise ConfigError("give a whole model= or its parts backbone=/heads=, not both")
    if not isinstance(model, nn.Module):
      raise ConfigError(f"model= must be a flax.linen Module, got {type(model).__name__}")
    return model
  if heads is not None and not isinstance(heads, Mapping):
    raise ConfigError(f"heads= must be a dict {{task: flax module}}, got {type(heads).__name__}")
  spec = base.ModelSpec(
      backbone_spec=models.parse_spec(config.model.backbone),
      shared_layers=models.parse_spec(config.model.shared_layers),
      task_layers=models.parse_spec(config.model.task_layers),
      dropout_rate=config.model.dropout_rate, global_pooling=config.model.global_pooling,
      backbone=backbone, freeze_backbone=not config.model.train_backbone,
      heads=None if heads is None else dict(heads))
  try:
    return models.get(config.model.name, tasks, spec, **config.model.kwargs.to_dict())
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from None


def gradient_mode(name: str, weighting: weighting_lib.Weighting, grad_wrt: str | None,
                  diagnostics: bool, model: nn.Module) -> str | None:
  """What the per-task gradients are taken of ("params" | "rep"), or None for none at all."""
  key = "config.weighting_kwargs.grad_wrt"
  if grad_wrt is not None and grad_wrt not in GRAD_WRT:
    raise ConfigError(f"{key} must be one of {GRAD_WRT}, got {grad_wrt!r}")
  if weighting.rep_only:
    if grad_wrt == "params":
      raise ConfigError(f"{key}: weighting {name!r} is defined on representation gradients "
                        "only; use grad_wrt='rep' (the default for it)")
    grad_wrt = "rep"
  if grad_wrt == "rep" and weighting.needs != "losses" and not weighting.allows_rep:
    raise ConfigError(f"{key}: weighting {name!r} is not defined on representation gradients; "
                      "use grad_wrt='params'")
  if grad_wrt == "rep" and weighting.grad_state:
    raise ConfigError(f"{key}: weighting {name!r} keeps averages of per-task gradients across "
                      "batches, which only parameter gradients allow; use grad_wrt='params'")
  if grad_wrt == "rep" and not base.has_split(model):
    raise ConfigError(f"{key}: model {type(model).__name__} has no encode/decode split, so no "
                      "shared representation; use grad_wrt='params'")
  if weighting.needs == "losses" and not diagnostics:
    return None
  return grad_wrt or "params"


def check_model(setup: Setup, example_inputs) -> None:
  """ConfigError unless the model meets the contract on inputs shaped like `example_inputs`
  (abstractly: nothing is computed), naming what breaks it."""
  x = jax.ShapeDtypeStruct((1, *example_inputs.shape[1:]), jnp.float32)
  try:
    variables = jax.eval_shape(lambda y: setup.model.init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}, y, train=False), x)
    base.check_model(setup.model, variables, x, setup.task_names)
  except ValueError as e:
    raise ConfigError(str(e).splitlines()[0]) from None
