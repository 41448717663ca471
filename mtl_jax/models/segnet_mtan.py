"""SegNet-MTAN: SegNet with a task-specific soft-attention network per task (Liu, Johns and
Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019, Sec. 3 and Fig. 2), in
the layout of their code (github.com/lorenmt/mtan, im2im_pred/model_segnet_mtan.py), which
Nash-MTL and FAMO train on NYUv2 (Nash-MTL's experiments/nyuv2/models.py, `SegNetMtan`).

The shared network is `segnet.SegNetTrunk`. With g^(j) / p^(j) a stage's first / last conv
block output, task t's encoder attention at stage j is

    a_t^(j) = att_t^(j)(g^(0))                      j = 0
    a_t^(j) = att_t^(j)([g^(j); e_t^(j-1)])         j = 1 .. 4
    e_t^(j) = maxpool(F^(j)(a_t^(j) * p^(j)))

and, from u_0 = e_t^(4), its decoder attention at decoder stage k (deepest first)

    d_t^(k) = dec_att_t^(k)([unpooled^(k); G^(k)(upsample(u_k))]),  u_{k+1} = d_t^(k) * out^(k)

where att/dec_att are 1x1 conv + BN + ReLU + 1x1 conv + BN + sigmoid (`AttentionLayer`, the
task's own), F^(j) and G^(k) 3x3 conv blocks shared by the tasks (`encoder_block_att`,
`decoder_block_att`), `upsample` bilinear with aligned corners, and out^(k) the trunk's decoder
stage output. Task t's head (`segnet.DenseHead`) reads u_5. The decoder's first attention
concatenates two f_4-wide maps where the reference declares f_4 + f_3 inputs, so f_3 = f_4 is
required, as in the paper's widths.

Parameters: `trunk` and `shared_attention` (F, G) are shared; `attention_<task>` and
`head_<task>` belong to the task. Nash-MTL counts the attention layers among the shared
parameters; here they are the task's, as in `mtl_jax.models.mtan`, so gradient methods in
parameter mode weight only the trunk and F, G (in representation mode the whole encoder
receives the weighted cotangent either way). `encode` returns {task: u_5}.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models import base, segnet
from mtl_jax.models.pooling import max_pool_2x2
from mtl_jax.tasks import Task

__all__ = ["AttentionLayer", "SegNetMTAN", "make"]

SHARED_ATTENTION = "shared_attention"


class AttentionLayer(nn.Module):
  """sigmoid(BN(conv1x1(relu(BN(conv1x1(x)))))) of `width` channels (the reference's
  `att_layer`)."""
  width: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    h = nn.relu(segnet.batch_norm(train)(segnet.conv(self.width, 1)(x)))
    return nn.sigmoid(segnet.batch_norm(train)(segnet.conv(self.width, 1)(h)))


class TaskAttention(nn.Module):
  """One task's attention layers, one per encoder and decoder stage."""
  filters: Sequence[int]

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool, side: str, stage: int) -> jnp.ndarray:
    width = self.filters[stage] if side == "encoder" else self.filters[max(stage - 1, 0)]
    return AttentionLayer(width, name=f"{side}_{stage}")(x, train=train)


class SharedAttentionBlocks(nn.Module):
  """The conv blocks F^(j) (`encoder_<j>`) and G^(k) (`decoder_<k>`) every task's attention
  passes through."""
  filters: Sequence[int]

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool, side: str, stage: int) -> jnp.ndarray:
    f, last = self.filters, segnet.STAGES - 1
    if side == "encoder":
      width = f[stage + 1] if stage < last else f[last]
    else:
      width = f[stage - 1] if 0 < stage < last else f[stage]
    return segnet.ConvBNReLU(width, name=f"{side}_{stage}")(x, train=train)


class SegNetMTAN(nn.Module):
  """{task: per-pixel output}: the shared SegNet with per-task attention (module docstring)."""
  tasks: Sequence[Task]
  filters: Sequence[int] = segnet.FILTERS

  def owner(self, path: tuple) -> str | None:
    return base.owner_by_names([t.name for t in self.tasks], (segnet.TRUNK, SHARED_ATTENTION),
                               ("attention_", "head_"))(path)

  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    return self._forward(x, None, train)

  def encode(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    """{task: u_5}, the task's attended features at input resolution."""
    return self._forward(x, None, train, encode_only=True)

  def decode(self, reps: dict, *, train: bool = False) -> dict:
    return self._forward(None, reps, train)

  @nn.compact
  def _forward(self, x, reps, train: bool, encode_only: bool = False):
    if reps is None:
      trunk = segnet.SegNetTrunk(tuple(self.filters), name=segnet.TRUNK)(x, train=train)
      blocks = SharedAttentionBlocks(tuple(self.filters), name=SHARED_ATTENTION)
      reps = {t.name: self._attend(trunk, blocks, t.name, train) for t in self.tasks}
      if encode_only:
        return reps
    return segnet.heads(self.tasks, reps)

  def _attend(self, trunk: segnet.TrunkFeatures, blocks: SharedAttentionBlocks, task: str,
              train: bool) -> jnp.ndarray:
    attention = TaskAttention(tuple(self.filters), name=f"attention_{task}")
    e = None
    for j in range(segnet.STAGES):
      inputs = trunk.encoder_first[j] if j == 0 else jnp.concatenate(
          [trunk.encoder_first[j], e], axis=-1)
      a = attention(inputs, train=train, side="encoder", stage=j)
      e = max_pool_2x2(blocks(a * trunk.encoder_last[j], train=train, side="encoder", stage=j))
    u = e
    for k, stage in enumerate(reversed(range(segnet.STAGES))):
      up = blocks(segnet.upsample_bilinear_2x(u), train=train, side="decoder", stage=stage)
      d = attention(jnp.concatenate([trunk.unpooled[k], up], axis=-1), train=train,
                    side="decoder", stage=stage)
      u = d * trunk.decoder_last[k]
    return u


def make(tasks: Sequence[Task], spec: base.ModelSpec, *,
         filters: Sequence[int] = segnet.FILTERS) -> SegNetMTAN:
  """The registry's factory (`config.model.name = "segnet_mtan"`); `filters`: the five stage
  widths, the last two equal."""
  segnet.refuse_specs(spec, "segnet_mtan")
  widths = segnet.check_filters(filters, "segnet_mtan")
  if widths[3] != widths[4]:
    raise ValueError(f"segnet_mtan: the last two filters must be equal (the decoder's first "
                     f"attention reads two maps of that width), got {widths}")
  return SegNetMTAN(tuple(tasks), widths)
