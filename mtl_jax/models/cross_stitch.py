"""Cross-stitch networks (Misra, Shrivastava, Gupta and Hebert, "Cross-stitch Networks for
Multi-task Learning", CVPR 2016).

One network ("column") per task, all of the same shape; after each stage a cross-stitch unit
mixes the columns' activations linearly (the paper's Eq. 1, for T tasks):

    h'_t = sum_s alpha_ts h_s          alpha: a learned T x T matrix per stage

and the mixed h'_t is what column t's next stage (or task t's head) reads. With
`per_channel=True` every channel has its own T x T matrix (alpha_ts is a vector over channels,
multiplied elementwise). alpha starts at `init_self` on the diagonal and `init_other` off it;
the paper's best start (Sec. 5.1) is (0.9, 0.1) for two tasks, so the default `init_other` is
(1 - init_self) / (T - 1), rows summing to one for any T; `init_self=1, init_other=0` starts
the network as T independent single-task networks. The paper (Sec. 5.2) also trains alpha
with a learning rate 10^2 to 10^3 times the network's, under SGD; here alpha shares the
optimizer's (Adam, the default, scales each parameter's step by itself).

    x -> backbone (shared) -> [stage 1 of every column -> stitch 1] -> ... -> [stage J ->
         stitch J] -> h'_t -> head t

Stages. `spec.shared_layers` is split into stages by `stages_of`: every width (an int layer)
starts a stage, and the tokens after it ("d", "p", "r") belong to it, so (32, "p", 64, "p") is
two stages [32, "p"] and [64, "p"] and (256,) is one; tokens before the first width join the
first stage. The same rule gives MTAN (`mtl_jax.models.mtan`) its stages. A stage's layers are
a `SpecStack`: Dense layers on vectors [B, D], 3x3 convs on images [B, H, W, C].

Parameters. The backbone (`backbone`) and the cross-stitch units (`stitch_<j>`) are shared:
the units couple the tasks. Column t (`column_<t>`, every stage of it) and head t belong to
task t. Each column keeps a parameter tree of its own (its name, its gradient); the columns are
evaluated together (`mtl_jax.models.stacked.map_members`), batched with `jax.vmap` over a task
axis, except on XLA:CPU with images: there the columns run as an unrolled loop over the tasks,
one convolution per column, because vmapped convolutions become batched (grouped) convolutions,
which XLA:CPU runs very slowly (a 3x3 conv's forward and backward, batch 32, two columns:
600 / 160 / 110 ms on 32x32x64 / 8x8x256 / 4x4x512 maps against 63 / 35 / 42 ms in a loop).

No encoder/decoder split: a representation per task would be the last stage's stitched
activations, and column t's parameters would sit inside the encoder, but through the stitch
units they shape every task's representation, not only task t's, which the contract
(`mtl_jax.models.base`) forbids of task parameters inside an encoder. So this model trains with
every weighting through the generic path (the VJP of the whole model per task). A linear
probe reads `features`: the h'_t of the last stage, pooled and concatenated.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import base, parts, stacked
from mtl_jax.models.backbones import BACKBONE
from mtl_jax.models.base import ModelSpec, pooled
from mtl_jax.models.specs import SpecStack, parse_spec
from mtl_jax.tasks import Task

__all__ = ["CrossStitch", "Stages", "make", "stages_of"]


def stages_of(layers: Any) -> tuple[tuple, ...]:
  """A layer spec split into stages: each width starts one, the tokens after it join it.

  Raises:
    ValueError: naming `shared_layers`, when the spec has no width (no stage).
  """
  layers = parse_spec(layers)
  starts = [i for i, item in enumerate(layers) if isinstance(item, int)]
  if not starts:
    raise ValueError(f"shared_layers {layers!r} has no width (int layer), so no stage; "
                     "give it at least one, e.g. (256,)")
  bounds = [0] + starts[1:] + [len(layers)]
  return tuple(tuple(layers[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))


class Stages(nn.Module):
  """A stack of stages, each a `SpecStack` named `stage_<j>`: all of them by default, or only
  stage `stage`."""
  stages: Sequence[Sequence[Any]]
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool, stage: int | None = None):
    for j, layers in enumerate(self.stages):
      if stage is None or stage == j:
        x = SpecStack(tuple(layers), self.dropout_rate, name=f"stage_{j}")(x, train=train)
    return x


def uses_dropout(stages: Sequence[Sequence[Any]], rate: float, train: bool) -> bool:
  """Whether applying `stages` draws dropout randomness."""
  return train and rate > 0 and any("d" in layers for layers in stages)


def task_params(parent: nn.Module, prefix: str, names: Sequence[str], module: nn.Module,
                *example, method: str | Callable | None = None) -> Any:
  """Inside `parent`'s compact method: one parameter tree per task, `<prefix>_<task>`, each
  `module`'s parameters (initialised on `example`), returned as a list in task order (for
  `stacked.map_members`, which stacks them on a task axis when it runs batched)."""
  init = lambda rng: module.init(rng, *example, train=False, method=method)["params"]
  return [parent.param(f"{prefix}_{name}", init) for name in names]


STITCH = "stitch"
COLUMN = "column"


class CrossStitch(nn.Module):
  """{task: output}: one column per task, mixed by a cross-stitch unit after every stage.

  Attributes:
    tasks: the tasks, in order (the order of alpha's rows and columns).
    spec: the layer specs (`parts.layer_spec`); `spec.shared_layers` gives the stages.
    init_self, init_other: alpha's initial diagonal and off-diagonal entries.
    per_channel: one T x T matrix per channel (else one per stage).
    backbone, heads: a user's modules (see `mtl_jax.models.parts`).
  """
  tasks: Sequence[Task]
  spec: ModelSpec
  init_self: float = 0.9
  init_other: float = 0.1
  per_channel: bool = False
  backbone: nn.Module | None = None
  heads: Mapping[str, nn.Module] | None = None

  @property
  def global_pooling(self) -> str:
    return self.spec.global_pooling

  def owner(self, path: tuple) -> str | None:
    return base.owner_by_names([t.name for t in self.tasks], (BACKBONE, STITCH),
                      (COLUMN + "_", "heads_", "head_"))(path)

  def _alpha_init(self, channels: int) -> Callable:
    num = len(self.tasks)
    eye = jnp.eye(num)
    matrix = self.init_self * eye + self.init_other * (1 - eye)
    if self.per_channel:
      return lambda _: jnp.broadcast_to(matrix[:, :, None], (num, num, channels))
    return lambda _: matrix

  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    return self._forward(x, train, "all")

  def features(self, x: jnp.ndarray) -> jnp.ndarray:
    """What a linear probe reads: every task's stitched last stage h'_t, pooled over space
    (`global_pooling`) and concatenated in task order."""
    h = self._forward(x, False, "features")
    return jnp.concatenate([pooled(h[i], self.global_pooling) for i in range(h.shape[0])], -1)

  @nn.compact
  def _forward(self, x: jnp.ndarray, train: bool, part: str):
    spec, names = self.spec, [t.name for t in self.tasks]
    stages = stages_of(spec.shared_layers)
    x = parts.apply_backbone(spec, self.backbone, x, train=train)
    column = Stages(stages, spec.dropout_rate)
    params = task_params(self, COLUMN, names, column, x[:1])
    h = jnp.broadcast_to(x, (len(names),) + x.shape)            # [T, B, ...]
    dropout = uses_dropout(stages, spec.dropout_rate, train)
    for j in range(len(stages)):
      def run(p, h_t, rng, j=j):
        rngs = {"dropout": rng} if dropout else None
        return column.apply({"params": p}, h_t, train=train, stage=j, rngs=rngs)
      rngs = jax.random.split(self.make_rng("dropout") if dropout else jax.random.PRNGKey(0),
                              len(names))
      h = stacked.map_members(run, params, h, rngs)
      alpha = self.param(f"{STITCH}_{j}", self._alpha_init(h.shape[-1]))
      if self.per_channel:
        h = jnp.einsum("tsc,sb...c->tb...c", alpha, h)
      else:
        h = jnp.einsum("ts,sb...->tb...", alpha, h)
    if part == "features":
      return h
    return {task.name: parts.apply_head(spec, self.heads, task, h[i], train=train)
            for i, task in enumerate(self.tasks)}


def _number(key: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ValueError(f"cross_stitch: {key} must be a finite number, got {value!r}")
  return float(value)


def make(tasks: Sequence[Task], spec: ModelSpec, *, init_self: float = 0.9,
         init_other: float | None = None, per_channel: bool = False) -> CrossStitch:
  """The registry's factory (`config.model.name = "cross_stitch"`).

  Args:
    init_self: alpha_tt's initial value.
    init_other: alpha_ts's (s != t) initial value; None: (1 - init_self) / (T - 1).
    per_channel: a T x T unit per channel instead of one per stage.

  Raises:
    ValueError: naming a bad hyper-parameter, or `shared_layers` without a stage.
  """
  tasks = tuple(tasks)
  init_self = _number("init_self", init_self)
  if init_other is None:
    init_other = (1.0 - init_self) / max(len(tasks) - 1, 1)
  init_other = _number("init_other", init_other)
  if not isinstance(per_channel, bool):
    raise ValueError(f"cross_stitch: per_channel must be True or False, got {per_channel!r}")
  stages_of(spec.shared_layers)
  fields = parts.module_fields(tasks, spec)
  return CrossStitch(tasks, fields["spec"], init_self, init_other, per_channel,
                     fields["backbone"], fields["heads"])
