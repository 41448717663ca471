"""Hard parameter sharing: backbone -> shared layers -> one head per task."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models.specs import SpecStack, global_pool
from mtl_jax.tasks import Task


def _call_backbone(module: nn.Module, x, train: bool):
  """Calls a user's backbone with `train=` only if its __call__ takes it."""
  params = inspect.signature(type(module).__call__).parameters
  return module(x, train=train) if "train" in params else module(x)


class HardParameterSharing(nn.Module):
  """Returns ({task: logits f32[B, C] | values f32[B, 1]}, shared representation).

  `backbone` is a user's module or None for the spec-built `backbone_spec`; the shared
  representation is what every head reads (the output of `shared_layers`).
  """
  tasks: Sequence[Task]
  backbone_spec: Sequence[Any] = ()
  shared_layers: Sequence[Any] = ()
  task_layers: Sequence[Any] = ()
  dropout_rate: float = 0.0
  global_pooling: str = "max"
  backbone: nn.Module | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False):
    if self.backbone is not None:
      x = _call_backbone(self.backbone, x, train)
    else:
      x = SpecStack(self.backbone_spec, self.dropout_rate, name="backbone")(x, train=train)
    rep = SpecStack(self.shared_layers, self.dropout_rate, name="shared")(x, train=train)
    outputs = {}
    for task in self.tasks:
      h = SpecStack(self.task_layers, self.dropout_rate, name=f"head_{task.name}")(
          rep, train=train)
      h = global_pool(h, self.global_pooling)
      outputs[task.name] = nn.Dense(task.output_size, name=f"out_{task.name}")(h)
    return outputs, rep
