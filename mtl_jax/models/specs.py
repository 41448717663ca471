"""Layer specs: short lists such as (256, "d", 128) or (32, "p", 64, "r") turned into modules.

A token means one layer, chosen by the input's rank so one parser serves vectors and images:

| token | vectors [B, D]                 | images [B, H, W, C]                         |
| ----- | ------------------------------ | ------------------------------------------- |
| int n | Dense(n) + ReLU                | 3x3 conv with n filters, ReLU, same padding |
| "d"   | dropout                        | spatial dropout (whole channels)            |
| "p"   | (not defined)                  | 2x2 max pool, stride 2 (`pooling.py`)       |
| "r"   | residual block of two Dense    | residual block of two 3x3 convs             |
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models.pooling import max_pool_2x2

TOKENS = ("d", "p", "r")


def parse_spec(spec: Any) -> tuple:
  """Validates a spec and returns it as a tuple of positive ints and tokens in TOKENS.

  Accepts a sequence or a comma-separated string ("256,d,128"), also as a sequence's item
  (`--config.model.backbone=8,p` reaches a tuple field as ("8,p",)); raises ValueError naming
  the bad entry.
  """
  if spec is None:
    return ()
  if isinstance(spec, str):
    spec = [spec]
  spec = [part for item in spec
          for part in ([p.strip() for p in item.split(",") if p.strip()]
                       if isinstance(item, str) else [item])]
  out = []
  for item in spec:
    if isinstance(item, str) and item.strip().lstrip("-").isdigit():
      item = int(item)
    if isinstance(item, bool) or not isinstance(item, (int, str)):
      raise ValueError(f"layer {item!r} is neither a width nor one of {TOKENS}")
    if isinstance(item, int) and item <= 0:
      raise ValueError(f"layer width must be positive, got {item}")
    if isinstance(item, str) and item not in TOKENS:
      raise ValueError(f"unknown layer {item!r}; use an int width or one of {TOKENS}")
    out.append(item)
  return tuple(out)


class ResidualBlock(nn.Module):
  """relu(x + f(x)), f = two Dense (vectors) or two 3x3 convs (images) of x's own width."""

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    if x.ndim == 4:
      layer = lambda name: nn.Conv(width, (3, 3), padding="SAME", name=name)
    else:
      layer = lambda name: nn.Dense(width, name=name)
    return nn.relu(x + layer("out")(nn.relu(layer("in")(x))))


class SpecStack(nn.Module):
  """The layers of a spec, applied in order; see the module docstring for the tokens."""
  spec: Sequence[Any]
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    image = x.ndim == 4
    for i, item in enumerate(parse_spec(self.spec)):
      if isinstance(item, int):
        if image:
          x = nn.relu(nn.Conv(item, (3, 3), padding="SAME", name=f"conv_{i}")(x))
        else:
          x = nn.relu(nn.Dense(item, name=f"dense_{i}")(x))
      elif item == "d":
        x = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2) if image else (),
                       name=f"dropout_{i}")(x, deterministic=not train)
      elif item == "p":
        if not image:
          raise ValueError(f"layer 'p' (2x2 max pool) needs images [B, H, W, C], got "
                           f"inputs of shape {x.shape}")
        x = max_pool_2x2(x)  # nn.max_pool's values, a faster gradient
      elif item == "r":
        x = ResidualBlock(name=f"residual_{i}")(x)
    return x


def global_pool(x: jnp.ndarray, kind: str = "max") -> jnp.ndarray:
  """[B, H, W, C] -> [B, C] by max or average; vectors pass through."""
  if x.ndim != 4:
    return x
  if kind == "max":
    return x.max(axis=(1, 2))
  if kind == "average":
    return x.mean(axis=(1, 2))
  raise ValueError(f"global_pooling must be 'max' or 'average', got {kind!r}")
