"""SegNet as the MTAN and Nash-MTL NYUv2 experiments build it, and its hard-sharing form.

Badrinarayanan, Kendall and Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017, in the layout of Liu, Johns and Davison's
code for "End-to-End Multi-Task Learning with Attention" (CVPR 2019; github.com/lorenmt/mtan,
im2im_pred/model_segnet_split.py, reused by Nash-MTL's experiments/nyuv2/models.py):

- five encoder stages of widths f = (64, 128, 256, 512, 512): a 3x3 conv + batch norm + ReLU
  (`ConvBNReLU`) to f_i, then one more (stages 0, 1) or two more (stages 2-4) at f_i, then a
  2x2 max pool that remembers where each maximum was;
- five decoder stages, deepest first: max-unpool to the remembered positions, a 3x3 conv block
  to f_{i-1} (f_0 for the last), then one (stages 0, 1) or two (stages 2-4) more;
- per task a head of a 3x3 conv (f_0 -> f_0) and a 1x1 conv to the task's channels, without
  norm or activation between them (`DenseHead`).

Convolutions start from Xavier-normal kernels and zero biases, batch norm from (1, 0), as the
reference code initialises them; batch norm keeps running averages with PyTorch's momentum 0.1
and epsilon 1e-5. Inputs need a height and width divisible by 32.

`SegNet` (registered as "segnet") is the hard-sharing network of the papers' tables ("Split,
Standard"): the encoder-decoder (`trunk`) is shared, `encode` returns its last decoder features
and each head reads them. Parameters: `trunk` shared, `head_<task>` the task's. `filters`
makes the widths configurable (tests and the generated-shapes config use narrow ones).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models import base
from mtl_jax.models.pooling import max_pool_2x2
from mtl_jax.tasks import Task

__all__ = ["ConvBNReLU", "DenseHead", "SegNet", "SegNetTrunk", "conv", "make", "max_unpool",
           "pool_with_indices", "upsample_bilinear_2x"]

FILTERS = (64, 128, 256, 512, 512)
STAGES = 5
TRUNK = "trunk"
XAVIER = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")  # torch's xavier_normal_


def conv(width: int, kernel: int, name: str | None = None) -> nn.Conv:
  """A conv with SAME padding, Xavier-normal kernel and zero bias, as the reference's."""
  return nn.Conv(width, (kernel, kernel), padding="SAME", kernel_init=XAVIER,
                 bias_init=nn.initializers.zeros, name=name)


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  """PyTorch's BatchNorm2d defaults: momentum 0.1 (flax's 0.9), epsilon 1e-5."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ConvBNReLU(nn.Module):
  """3x3 conv, batch norm, ReLU (the reference's `conv_layer`)."""
  width: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    return nn.relu(batch_norm(train)(conv(self.width, 3)(x)))


class DenseHead(nn.Module):
  """A per-pixel head: 3x3 conv at the input's width, then 1x1 conv to `channels` outputs."""
  channels: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    hidden = conv(x.shape[-1], 3)(x)
    return conv(self.channels, 1)(hidden)


def pool_with_indices(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(2x2 max pool of x [B, H, W, C], i32[B, H/2, W/2, C] the position 2 dy + dx of each
  window's first maximum in row-major order, as `nn.MaxPool2d(return_indices=True)` keeps)."""
  b, h, w, c = x.shape
  windows = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
  where = jnp.argmax(windows.reshape(b, h // 2, w // 2, c, 4), axis=-1)
  return max_pool_2x2(x), jax.lax.stop_gradient(where).astype(jnp.int32)


def max_unpool(y: jnp.ndarray, where: jnp.ndarray) -> jnp.ndarray:
  """`nn.MaxUnpool2d(2, 2)`: each value of y [B, h, w, C] back to the position `where` of its
  2x2 window in [B, 2h, 2w, C], zeros elsewhere."""
  b, h, w, c = y.shape
  placed = y[..., None] * (where[..., None] == jnp.arange(4)).astype(y.dtype)
  return placed.reshape(b, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, c)


def _align_corners_matrix(n: int) -> np.ndarray:
  """f32[2n, n]: linear interpolation from n samples to 2n with the corners aligned."""
  position = np.arange(2 * n) * ((n - 1) / max(2 * n - 1, 1))
  low = np.clip(np.floor(position).astype(int), 0, n - 1)
  high = np.minimum(low + 1, n - 1)
  frac = position - low
  m = np.zeros((2 * n, n), np.float32)
  np.add.at(m, (np.arange(2 * n), low), 1 - frac)
  np.add.at(m, (np.arange(2 * n), high), frac)
  return m


def upsample_bilinear_2x(x: jnp.ndarray) -> jnp.ndarray:
  """`F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)` of [B, H, W, C]."""
  rows = jnp.asarray(_align_corners_matrix(x.shape[1]))
  cols = jnp.asarray(_align_corners_matrix(x.shape[2]))
  return jnp.einsum("oh,bhwc,pw->bopc", rows, x, cols)


class TrunkFeatures(NamedTuple):
  """What the attention of SegNet-MTAN reads from the shared SegNet, stage by stage."""
  encoder_first: list   # each encoder stage's first conv block output (g_encoder[i][0])
  encoder_last: list    # each encoder stage's last conv block output (g_encoder[i][1])
  unpooled: list        # each decoder stage's unpooled input, deepest first (g_upsampl[j])
  decoder_last: list    # each decoder stage's output, deepest first (g_decoder[j][-1])


class SegNetTrunk(nn.Module):
  """The shared SegNet encoder-decoder; returns every stage's features (`TrunkFeatures`)."""
  filters: Sequence[int] = FILTERS

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> TrunkFeatures:
    f = self.filters
    if x.ndim != 4 or x.shape[1] % 2 ** STAGES or x.shape[2] % 2 ** STAGES:
      raise ValueError(f"SegNet needs images [B, H, W, C] with H and W divisible by "
                       f"{2 ** STAGES}, got inputs of shape {x.shape}")
    first, last, positions = [], [], []
    for i in range(STAGES):
      x = ConvBNReLU(f[i], name=f"encoder_{i}")(x, train=train)
      first.append(x)
      for k in range(_extra_blocks(i)):
        x = ConvBNReLU(f[i], name=f"encoder_{i}_{k}")(x, train=train)
      last.append(x)
      x, where = pool_with_indices(x)
      positions.append(where)
    unpooled, decoded = [], []
    for i in reversed(range(STAGES)):
      x = max_unpool(x, positions[i])
      unpooled.append(x)
      width = f[max(i - 1, 0)]
      x = ConvBNReLU(width, name=f"decoder_{i}")(x, train=train)
      for k in range(_extra_blocks(i)):
        x = ConvBNReLU(width, name=f"decoder_{i}_{k}")(x, train=train)
      decoded.append(x)
    return TrunkFeatures(first, last, unpooled, decoded)


def _extra_blocks(stage: int) -> int:
  """Conv blocks after a stage's first: one in stages 0 and 1, two deeper."""
  return 1 if stage < 2 else 2


def pixel_channels(task: Task, height: int, width: int) -> int:
  """Outputs per pixel of `task` on [height, width] maps (C logits, 1 depth, 3 normals)."""
  if task.label_shape[:2] != (height, width):
    raise ValueError(f"task {task.name!r}: a per-pixel model's outputs are {height}x{width} "
                     f"maps, but the task's label_shape is {task.label_shape}")
  return task.output_size // (height * width)


def heads(tasks: Sequence[Task], reps: dict) -> dict:
  """Inside a compact method: {task: DenseHead `head_<task>` on reps[task]}."""
  out = {}
  for task in tasks:
    z = reps[task.name]
    out[task.name] = DenseHead(pixel_channels(task, *z.shape[1:3]),
                               name=f"head_{task.name}")(z)
  return out


class SegNet(nn.Module):
  """{task: per-pixel output}: the shared SegNet and one `DenseHead` per task."""
  tasks: Sequence[Task]
  filters: Sequence[int] = FILTERS
  shared_modules = (TRUNK,)

  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    return self._forward(x, None, train)

  def encode(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """f32[B, H, W, f_0]: the last decoder stage's features, read by every head."""
    return self._forward(x, None, train, encode_only=True)

  def decode(self, reps: dict, *, train: bool = False) -> dict:
    return self._forward(None, reps, train)

  @nn.compact
  def _forward(self, x, reps, train: bool, encode_only: bool = False):
    if reps is None:
      z = SegNetTrunk(tuple(self.filters), name=TRUNK)(x, train=train).decoder_last[-1]
      if encode_only:
        return z
      reps = base.per_task_reps(z, [t.name for t in self.tasks])
    return heads(self.tasks, reps)


def check_filters(filters, model: str) -> tuple[int, ...]:
  """The five stage widths as ints; ValueError naming `model` otherwise."""
  try:
    widths = tuple(int(w) for w in filters)
  except (TypeError, ValueError):
    widths = ()
  if len(widths) != STAGES or min(widths) < 1 or widths != tuple(filters):
    raise ValueError(f"{model}: filters must be {STAGES} positive ints (the stage widths, "
                     f"{FILTERS} in the paper), got {filters!r}")
  return widths


def refuse_specs(spec: base.ModelSpec, model: str) -> None:
  """ValueError if `spec` carries modules or layer specs: the network is fixed (as
  `multi_lenet`'s), its widths are the `filters` hyper-parameter."""
  base.refuse_modules(spec, model, "backbone", "heads")
  given = [k for k in ("backbone_spec", "shared_layers", "task_layers") if tuple(getattr(spec, k))]
  if given:
    raise ValueError(f"{model} has fixed layers; it reads no layer spec, but {given} are set: "
                     "set config.model.backbone, shared_layers and task_layers to () (the "
                     "widths are config.model.kwargs.filters)")


def make(tasks: Sequence[Task], spec: base.ModelSpec, *,
         filters: Sequence[int] = FILTERS) -> SegNet:
  """The registry's factory (`config.model.name = "segnet"`); `filters`: the five widths."""
  refuse_specs(spec, "segnet")
  return SegNet(tuple(tasks), check_filters(filters, "segnet"))
