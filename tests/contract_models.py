"""Small models of each shape the model contract allows, for tests across the contract.

- `PerTaskReps`: a split model with one representation per task (as MMoE's gated mixtures),
  whose task gates sit inside the encoder;
- `CrossStitch`: no encode/decode, two task columns mixed by a shared unit (the generic path);
- `FrozenTrunk`: a user model with a `backbone` submodule it can freeze, images in.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import backbones


class PerTaskReps(nn.Module):
  """encode -> {task: Z_t}: two shared experts mixed by one softmax gate per task."""
  tasks: tuple = ("a", "b")
  widths: tuple = (3, 1)
  shared_modules = ("expert_0", "expert_1")

  def setup(self):
    self.expert_0, self.expert_1 = nn.Dense(6), nn.Dense(6)
    self.gates = {t: nn.Dense(2) for t in self.tasks}
    self.outs = {t: nn.Dense(w) for t, w in zip(self.tasks, self.widths)}

  def owner(self, path):
    if path[0] in self.shared_modules:
      return None
    return path[0].split("_", 1)[1]  # gates_<task>, outs_<task>

  def encode(self, x, *, train=False):
    x = x.reshape(x.shape[0], -1)
    experts = jnp.stack([nn.tanh(self.expert_0(x)), nn.tanh(self.expert_1(x))], axis=1)
    return {t: jnp.einsum("be,bed->bd", nn.softmax(self.gates[t](x)), experts)
            for t in self.tasks}

  def decode(self, reps, *, train=False):
    return {t: self.outs[t](reps[t]) for t in self.tasks}

  def __call__(self, x, *, train=False):
    return self.decode(self.encode(x, train=train), train=train)


class CrossStitch(nn.Module):
  """No encode/decode: one column per task, activations mixed by a shared 2x2 unit."""
  tasks: tuple = ("a", "b")
  widths: tuple = (3, 1)

  def owner(self, path):
    return None if path[0] == "stitch" else path[0].split("_", 1)[1]

  @nn.compact
  def __call__(self, x, *, train=False):
    x = x.reshape(x.shape[0], -1)
    a, b = self.tasks
    ha = nn.tanh(nn.Dense(6, name=f"column_{a}")(x))
    hb = nn.tanh(nn.Dense(6, name=f"column_{b}")(x))
    alpha = self.param("stitch", lambda _: jnp.array([[0.9, 0.1], [0.1, 0.9]]))
    ma, mb = alpha[0, 0] * ha + alpha[0, 1] * hb, alpha[1, 0] * ha + alpha[1, 1] * hb
    return {a: nn.Dense(self.widths[0], name=f"out_{a}")(ma),
            b: nn.Dense(self.widths[1], name=f"out_{b}")(mb)}


class ConvBatchNorm(nn.Module):
  """A small convolutional backbone with batch statistics."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    return nn.relu(nn.BatchNorm(use_running_average=not train)(x))


class FrozenTrunk(nn.Module):
  """A user model with a `backbone` submodule, frozen when `freeze_backbone` (inference mode,
  no gradient), and per-task heads on its average-pooled features."""
  tasks: tuple = ("a", "b")
  widths: tuple = (3, 1)
  freeze_backbone: bool = True
  shared_modules = (backbones.BACKBONE,)

  def setup(self):
    self.backbone = ConvBatchNorm()
    self.heads = {t: nn.Dense(w) for t, w in zip(self.tasks, self.widths)}

  def encode(self, x, *, train=False):
    h = self.backbone(x, train=train and not self.freeze_backbone)
    h = h.mean(axis=(1, 2))
    return jax.lax.stop_gradient(h) if self.freeze_backbone else h

  def decode(self, reps, *, train=False):
    return {t: self.heads[t](reps[t]) for t in self.tasks}

  def __call__(self, x, *, train=False):
    z = self.encode(x, train=train)
    return self.decode({t: z for t in self.tasks}, train=train)


class Regularized(PerTaskReps):
  """PerTaskReps with a penalty of its own on the gates' logits (as DSelect-k's entropy)."""
  strength: float = 0.3

  def regularizer(self, x, *, train=False):
    x = x.reshape(x.shape[0], -1)
    return self.strength * sum(jnp.mean(self.gates[t](x) ** 2) for t in self.tasks)
