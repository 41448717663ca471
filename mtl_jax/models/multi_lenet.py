"""MultiLeNet, the MultiMNIST network of Sener and Koltun ("Multi-Task Learning as
Multi-Objective Optimization", NeurIPS 2018, https://arxiv.org/abs/1810.04650).

As in their code (github.com/intel-isl/MultiObjectiveOptimization, commit 5d8e834,
multi_task/models/multi_lenet.py: `MultiLeNetR` lines 6-30 is the shared part, `MultiLeNetO`
lines 33-46 one task's), on images [B, 28, 28, 1], convolutions unpadded:

    Z = relu(Dense 50(flatten(relu(maxpool2(dropout2d(conv 20, 5x5(
            relu(maxpool2(conv 10, 5x5(x))))))))))                    shared, Z f32[B, 50]
    y_t = Dense out_t(dropout(relu(Dense 50(Z))))                      task t

(28 -> 24 -> 12 -> 8 -> 4: the flattened map has 4 * 4 * 20 = 320 values). Parameters: the
shared 260 + 5,020 + 16,050 = 21,330 and, per 10-class head, 2,550 + 510 = 3,060; 27,450 for
two tasks, as the PyTorch model. Weights and biases start as PyTorch's defaults,
U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Each head ends in a Dense of `task.output_size` logits
(their log_softmax + NLL is our classification loss).

Dropout, rate `dropout` (their 0.5), only when training: after conv2 a whole channel of an
example is dropped (Dropout2d), in the head single units. Two deviations from their code, whose
hand-made masks (lines 14-19, 40-44) let MGDA-UB reuse one mask across the per-task backward
passes (here one forward pass serves every task, so that holds anyway): their channel mask is
shared by the whole batch and neither mask rescales the kept units by 1 / (1 - rate), so their
evaluation sees activations twice their training mean; here the masks are per example and
rescaled (flax's `nn.Dropout`), the usual Dropout2d / Dropout.

Parameters: `shared` (the convs and Dense 50 of Z) is shared; `head_<task>` is task t's.
`encode` -> Z (read by every head, so `grad_wrt="rep"`, the representation MGDA-UB uses, is
available), `decode` -> {task: logits}. Hyper-parameter (`config.model.kwargs`): `dropout`.
The architecture is fixed: the factory refuses layer specs and a user's backbone or heads.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.base import ModelSpec, refuse_modules
from mtl_jax.tasks import Task

__all__ = ["MultiLeNet", "make"]

SHARED = "shared"
DROPOUT = 0.5  # nn.Dropout2d() and the head's bernoulli(0.5) mask in their code


def torch_kernel_init():
  """PyTorch's default weight init of Conv2d and Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  """PyTorch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


def _conv(features: int, in_features: int, name: str) -> nn.Conv:
  return nn.Conv(features, (5, 5), padding="VALID", kernel_init=torch_kernel_init(),
                 bias_init=torch_bias_init(in_features * 25), name=name)


def _dense(features: int, in_features: int, name: str) -> nn.Dense:
  return nn.Dense(features, kernel_init=torch_kernel_init(),
                  bias_init=torch_bias_init(in_features), name=name)


def _max_pool2(x: jnp.ndarray) -> jnp.ndarray:
  return nn.max_pool(x, (2, 2), strides=(2, 2))


class Encoder(nn.Module):
  """MultiLeNetR: images [B, 28, 28, 1] -> Z f32[B, 50]."""
  dropout: float = DROPOUT

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = nn.relu(_max_pool2(_conv(10, x.shape[-1], "conv1")(x)))
    x = _conv(20, 10, "conv2")(x)
    x = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
    x = nn.relu(_max_pool2(x))
    x = x.reshape(x.shape[0], -1)
    return nn.relu(_dense(50, x.shape[-1], "fc")(x))


class Head(nn.Module):
  """MultiLeNetO: Z [B, 50] -> logits [B, out]."""
  out: int
  dropout: float = DROPOUT

  @nn.compact
  def __call__(self, z: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    h = nn.relu(_dense(50, z.shape[-1], "fc1")(z))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return _dense(self.out, 50, "fc2")(h)


class MultiLeNet(nn.Module):
  """{task: logits} from the shared LeNet trunk and one two-layer head per task."""
  tasks: Sequence[Task]
  dropout: float = DROPOUT

  shared_modules = (SHARED,)

  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    return self._forward(x, None, train, "all")

  def encode(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """Z f32[B, 50], read by every head."""
    return self._forward(x, None, train, "encode")

  def decode(self, reps: Mapping[str, jnp.ndarray], *, train: bool = False) -> dict:
    """{task: logits}, head t on reps[t]."""
    return self._forward(None, reps, train, "decode")

  @nn.compact
  def _forward(self, x, reps, train: bool, part: str):
    if part != "decode":
      z = Encoder(self.dropout, name=SHARED)(x, train=train)
      if part == "encode":
        return z
      reps = {t.name: z for t in self.tasks}
    return {t.name: Head(t.output_size, self.dropout, name=f"head_{t.name}")(reps[t.name],
                                                                             train=train)
            for t in self.tasks}


def make(tasks: Sequence[Task], spec: ModelSpec, *, dropout: float = DROPOUT) -> MultiLeNet:
  """The registry's factory (`config.model.name = "multi_lenet"`).

  Raises:
    ValueError: a user's backbone or heads, a layer spec (the layers are fixed: set
      config.model.backbone, shared_layers and task_layers to ()), or a dropout rate outside
      [0, 1).
  """
  refuse_modules(spec, "multi_lenet", "backbone", "heads")
  given = [k for k in ("backbone_spec", "shared_layers", "task_layers") if tuple(getattr(spec, k))]
  if given:
    raise ValueError(f"multi_lenet has fixed layers; it reads no layer spec, but {given} are "
                     "set: set config.model.backbone, shared_layers and task_layers to ()")
  if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
    raise ValueError(f"multi_lenet: dropout must be a rate in [0, 1), got {dropout!r}")
  return MultiLeNet(tuple(tasks), float(dropout))
