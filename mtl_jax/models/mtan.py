"""Multi-Task Attention Network, MTAN (Liu, Johns and Davison, "End-to-End Multi-Task Learning
with Attention", CVPR 2019).

A shared trunk and, per task, a soft attention module at every stage of it that selects the
task's features from the trunk's. With p^(j) the trunk's output at stage j (shared), task t's
attended features are (the paper's Sec. 3, task-specific attention module)

    a_t^(1) = h_t^(1)(g_t^(1)(p^(1)))
    a_t^(j) = h_t^(j)(g_t^(j)([p^(j); f^(j)(A_t^(j-1))]))        j = 2 .. J
    A_t^(j) = a_t^(j) * p^(j)                                    (elementwise)

g_t: a 1x1 conv (images) or Dense (vectors) of `attention_ratio` x the stage's width, ReLU;
h_t: a 1x1 conv or Dense of the stage's width, sigmoid, so every mask entry lies in (0, 1);
f^(j): a 3x3 conv (images) or Dense (vectors) to stage j's width, ReLU, then as many 2x2 max
pools as stage j has, so that it matches p^(j)'s resolution. Task t's head reads A_t^(J).
As in the authors' code (`encoder_block_att`, one module list for every task), f^(j) is
shared by the tasks; g_t and h_t are task t's. The paper computes a block's mask from the
block's first layer's output and applies it to the block's output; here a stage's mask is
computed from and applied to the stage's output p^(j), and the convs carry no batch norm (the
layer specs have none).

Stages: `spec.shared_layers` split by `cross_stitch.stages_of` (every width starts a stage,
the tokens after it join it; (256,) is one stage, (32, "p", 64, "p") two).

With every mask fixed to one (h_t's kernel zero and its bias large, say 100: sigmoid(100) is
1.0 in float32) A_t^(J) = p^(J) for every task: the model is hard parameter sharing with
the same backbone, trunk and heads (`mtl_jax.models.hps`).

Parameters: the backbone (`backbone`), the trunk (`shared`, stage j under `stage_<j>`) and
the f^(j) (`shared_f_<j>`) are shared; `attention_<t>` (g_t^(j) and h_t^(j) as `g_<j>`,
`h_<j>`) and the head belong to task t. The tasks' attention modules are evaluated together
(`mtl_jax.models.stacked.map_members`), batched with `jax.vmap` over a task axis, except on
XLA:CPU with images: there they run as an unrolled loop over the tasks, because vmapped
convolutions become batched (grouped) convolutions, which XLA:CPU runs very slowly (a 3x3
conv's forward and backward, batch 32, two tasks: 600 / 160 / 110 ms on 32x32x64 / 8x8x256 /
4x4x512 maps against 63 / 35 / 42 ms in a loop). The encoder/decoder split exists: `encode` returns
{task: A_t^(J)}; task t's attention parameters sit inside the encoder but shape only Z_t, as
the contract (`mtl_jax.models.base`) allows. `attention_masks(x)` returns the masks.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models import base, parts, stacked
from mtl_jax.models.backbones import BACKBONE
from mtl_jax.models.base import ModelSpec, pooled
from mtl_jax.models.cross_stitch import Stages, stages_of, task_params
from mtl_jax.models.pooling import max_pool_2x2
from mtl_jax.tasks import Task

__all__ = ["MTAN", "TaskAttention", "make"]

SHARED = "shared"
ATTENTION = "attention"


def _layer(image: bool, width: int, kernel: int, name: str) -> nn.Module:
  return nn.Conv(width, (kernel, kernel), padding="SAME", name=name) if image else nn.Dense(
      width, name=name)


class TaskAttention(nn.Module):
  """One task's attention modules: stage j's mask sigmoid(h_j(relu(g_j(inputs))))."""
  widths: Sequence[int]   # each stage's width (the mask's)
  hidden: Sequence[int]   # each g_j's width

  @nn.compact
  def __call__(self, inputs, *, train: bool, stage: int):
    del train
    image = inputs.ndim == 4
    g = nn.relu(_layer(image, self.hidden[stage], 1, f"g_{stage}")(inputs))
    return nn.sigmoid(_layer(image, self.widths[stage], 1, f"h_{stage}")(g))

  def every_stage(self, inputs: Sequence[jnp.ndarray], *, train: bool):
    return [self(z, train=train, stage=j) for j, z in enumerate(inputs)]


class MTAN(nn.Module):
  """{task: output}: a shared trunk with per-task soft attention at every stage.

  Attributes:
    tasks: the tasks, in order.
    spec: the layer specs (`parts.layer_spec`); `spec.shared_layers` gives the stages.
    attention_ratio: each g's width over its stage's width.
    backbone, heads: a user's modules (see `mtl_jax.models.parts`).
  """
  tasks: Sequence[Task]
  spec: ModelSpec
  attention_ratio: float = 1.0
  backbone: nn.Module | None = None
  heads: Mapping[str, nn.Module] | None = None

  @property
  def global_pooling(self) -> str:
    return self.spec.global_pooling

  def owner(self, path: tuple) -> str | None:
    return base.owner_by_names([t.name for t in self.tasks], (BACKBONE, SHARED),
                      (ATTENTION + "_", "heads_", "head_"))(path)

  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    return self._forward(x, None, train, "all")

  def encode(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    """{task: Z_t}: the task's attended features of the last stage, A_t^(J)."""
    return self._forward(x, None, train, "encode")

  def decode(self, reps: Mapping[str, jnp.ndarray], *, train: bool = False) -> dict:
    """{task: output}, head t on reps[t]."""
    return self._forward(None, reps, train, "decode")

  def attention_masks(self, x: jnp.ndarray) -> dict:
    """{task: (a_t^(1), ..., a_t^(J))}: every stage's mask, each shaped like p^(j)."""
    return self._forward(x, None, False, "masks")

  def features(self, x: jnp.ndarray) -> jnp.ndarray:
    """The Z_t pooled over space (`global_pooling`) and concatenated: what a probe reads."""
    return pooled(self._forward(x, None, False, "encode"), self.global_pooling)

  @nn.compact
  def _forward(self, x, reps, train: bool, part: str):
    spec, names = self.spec, [t.name for t in self.tasks]
    if part != "decode":
      stages = stages_of(spec.shared_layers)
      x = parts.apply_backbone(spec, self.backbone, x, train=train)
      trunk = Stages(stages, spec.dropout_rate, name=SHARED)
      p = []
      for j in range(len(stages)):
        x = trunk(x, train=train, stage=j)
        p.append(x)
      widths = [z.shape[-1] for z in p]
      hidden = [max(1, round(self.attention_ratio * w)) for w in widths]
      attention = TaskAttention(tuple(widths), tuple(hidden))
      examples = [p[0][:1]] + [jnp.concatenate([z[:1], z[:1]], axis=-1) for z in p[1:]]
      params = task_params(self, ATTENTION, names, attention, examples, method="every_stage")
      image = x.ndim == 4
      masks, attended = [], None
      for j, z in enumerate(p):
        inputs = jnp.broadcast_to(z, (len(names),) + z.shape)          # [T, B, ...]
        if j > 0:
          f = nn.relu(_layer(image, widths[j], 3, f"{SHARED}_f_{j}")(
              attended.reshape((-1,) + attended.shape[2:])))
          for _ in range(stages[j].count("p")):
            f = max_pool_2x2(f)
          inputs = jnp.concatenate([inputs, f.reshape(inputs.shape)], axis=-1)
        mask = stacked.map_members(
            lambda q, u, j=j: attention.apply({"params": q}, u, train=train, stage=j),
            params, inputs)
        masks.append(mask)
        attended = mask * z
      if part == "masks":
        return {t: tuple(m[i] for m in masks) for i, t in enumerate(names)}
      reps = {t: attended[i] for i, t in enumerate(names)}
      if part == "encode":
        return reps
    return {task.name: parts.apply_head(spec, self.heads, task, reps[task.name], train=train)
            for task in self.tasks}


def make(tasks: Sequence[Task], spec: ModelSpec, *, attention_ratio: float = 1.0) -> MTAN:
  """The registry's factory (`config.model.name = "mtan"`).

  Args:
    attention_ratio: the width of every attention module's hidden layer g, over its stage's
      width (> 0; at least one unit).

  Raises:
    ValueError: naming a bad hyper-parameter, or `shared_layers` without a stage.
  """
  if (isinstance(attention_ratio, bool) or not isinstance(attention_ratio, (int, float))
      or not math.isfinite(attention_ratio) or attention_ratio <= 0):
    raise ValueError(f"mtan: attention_ratio must be a positive number, got "
                     f"{attention_ratio!r}")
  stages_of(spec.shared_layers)
  tasks = tuple(tasks)
  fields = parts.module_fields(tasks, spec)
  return MTAN(tasks, fields["spec"], float(attention_ratio), fields["backbone"],
              fields["heads"])
