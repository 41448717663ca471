"""Hard parameter sharing: backbone -> shared layers -> one head per task."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.backbones import BACKBONE, call_backbone
from mtl_jax.models.specs import SpecStack, global_pool
from mtl_jax.tasks import Task


TRUNK = (BACKBONE, "shared")  # the top-level parameter names of the shared part


class HardParameterSharing(nn.Module):
  """Returns ({task: logits f32[B, C] | values f32[B, 1]}, shared representation).

  `backbone` is a user's module or None for the spec-built `backbone_spec`; either sits under
  the name `BACKBONE`. The shared representation is what every head reads (the output of
  `shared_layers`). `freeze_backbone` runs the backbone in inference mode (`train=False`:
  batch norm reads its running statistics, dropout is off) and stops the gradient at its
  output, so no backward pass through it is computed.
  """
  tasks: Sequence[Task]
  backbone_spec: Sequence[Any] = ()
  shared_layers: Sequence[Any] = ()
  task_layers: Sequence[Any] = ()
  dropout_rate: float = 0.0
  global_pooling: str = "max"
  backbone: nn.Module | None = None
  freeze_backbone: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray | None, *, train: bool = False,
               rep: jnp.ndarray | None = None, heads: bool = True):
    """`heads=False`: the trunk alone, returning the representation; `rep` given: the heads
    alone, on that representation (`x` unused). Gradient methods differentiate the two parts
    separately (mtl_jax.gradients)."""
    if rep is None:
      rep = self._trunk(x, train)
    if not heads:
      return rep
    return self._heads(rep, train), rep

  def _trunk(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    backbone_train = train and not self.freeze_backbone
    if self.backbone is not None:
      x = call_backbone(self.backbone, x, backbone_train)
    else:
      x = SpecStack(self.backbone_spec, self.dropout_rate, name=BACKBONE)(x, train=backbone_train)
    if self.freeze_backbone:
      x = jax.lax.stop_gradient(x)
    return SpecStack(self.shared_layers, self.dropout_rate, name="shared")(x, train=train)

  def _heads(self, rep: jnp.ndarray, train: bool) -> dict:
    outputs = {}
    for task in self.tasks:
      h = SpecStack(self.task_layers, self.dropout_rate, name=f"head_{task.name}")(
          rep, train=train)
      h = global_pool(h, self.global_pooling)
      outputs[task.name] = nn.Dense(task.output_size, name=f"out_{task.name}")(h)
    return outputs
