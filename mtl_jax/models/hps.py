"""Hard parameter sharing (Caruana, 1997): backbone -> shared layers -> one head per task.

The model every multi-task paper compares against, and the one a researcher builds first:

    model = HardParameterSharing(tasks, backbone_spec=(256,), shared_layers=(128,),
                                 task_layers=(64,))            # spec-built, or
    model = HardParameterSharing(tasks, backbone=MyBackbone(), heads={"digit": nn.Dense(10),
                                                                      "parity": nn.Dense(2)})

The backbone and the shared layers are shared (`shared_modules`); everything under a head's
name (`head_<task>`, `heads_<task>`) belongs to its task. The representation Z, read by every head, is the output of the
shared layers.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models import parts
from mtl_jax.models.backbones import BACKBONE
from mtl_jax.models.base import ModelSpec, pooled
from mtl_jax.models.specs import SpecStack
from mtl_jax.tasks import Task

SHARED = "shared"


class HardParameterSharing(nn.Module):
  """({task: output}) from a shared trunk and one head per task.

  Attributes:
    tasks: the tasks, in order; each spec-built head ends in a Dense of `task.output_size`.
    backbone_spec, shared_layers, task_layers: layer specs (`mtl_jax.models.specs`).
    dropout_rate: the rate of every "d" layer.
    global_pooling: how spec-built heads pool image features before their Dense output.
    backbone: a user's module replacing `backbone_spec` (under the name `BACKBONE` either way).
    freeze_backbone: run the backbone in inference mode (batch norm reads its running
      statistics, dropout is off) and stop the gradient at its output.
    heads: {task: a user's module} replacing the spec-built heads; each maps Z to the task's
      output itself (no pooling or output layer is added).
  """
  tasks: Sequence[Task]
  backbone_spec: Sequence[Any] = ()
  shared_layers: Sequence[Any] = ()
  task_layers: Sequence[Any] = ()
  dropout_rate: float = 0.0
  global_pooling: str = "max"
  backbone: nn.Module | None = None
  freeze_backbone: bool = False
  heads: Mapping[str, nn.Module] | None = None

  shared_modules = (BACKBONE, SHARED)

  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    return self._forward(x, None, train, "all")

  def encode(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """Z: the shared layers' output, read by every head."""
    return self._forward(x, None, train, "encode")

  def decode(self, reps: Mapping[str, jnp.ndarray], *, train: bool = False) -> dict:
    """{task: output}, head t on reps[t]."""
    return self._forward(None, reps, train, "decode")

  def features(self, x: jnp.ndarray) -> jnp.ndarray:
    """Z pooled over space (`global_pooling`): what a linear probe reads."""
    return pooled(self._forward(x, None, False, "encode"), self.global_pooling)

  @property
  def spec(self) -> ModelSpec:
    return ModelSpec(tuple(self.backbone_spec), tuple(self.shared_layers),
                     tuple(self.task_layers), self.dropout_rate, self.global_pooling,
                     freeze_backbone=self.freeze_backbone)

  @nn.compact
  def _forward(self, x, reps, train: bool, part: str):
    spec = self.spec
    if part != "decode":
      x = parts.apply_backbone(spec, self.backbone, x, train=train)
      rep = SpecStack(tuple(self.shared_layers), self.dropout_rate, name=SHARED)(x, train=train)
      if part == "encode":
        return rep
      reps = {task.name: rep for task in self.tasks}
    return {task.name: parts.apply_head(spec, self.heads, task, reps[task.name], train=train)
            for task in self.tasks}


def make(tasks: Sequence[Task], spec: ModelSpec) -> HardParameterSharing:
  """The registry's factory (`config.model.name = "hps"`)."""
  fields = parts.module_fields(tasks, spec)
  return HardParameterSharing(tuple(tasks), fields["spec"].backbone_spec,
                              fields["spec"].shared_layers, fields["spec"].task_layers,
                              spec.dropout_rate, spec.global_pooling, spec.backbone,
                              spec.freeze_backbone, fields["heads"])
