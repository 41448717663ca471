"""2x2 max pooling with stride 2 as a reshape and a max, with a cheap gradient.

`nn.max_pool` lowers to `reduce_window`, whose gradient is XLA's select-and-scatter: slow on
CPU (several times the pool's forward). `max_pool_2x2` gives the same values (VALID padding: a
trailing odd row or column is dropped) and the same gradient: each window's cotangent goes to
its first maximum in row-major order, as select-and-scatter picks it, and nowhere else (a
window holding NaN sends it to its last element). The gradient is built with selects on the
four strided views of the input and one reshape back, no transposes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _windows(x: jnp.ndarray) -> jnp.ndarray:
  """[B, H, W, C] -> [B, H // 2, 2, W // 2, 2, C], the 2x2 windows (odd edges cropped)."""
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c)


def _pool(x: jnp.ndarray) -> jnp.ndarray:
  return _windows(x).max(axis=(2, 4))


@jax.custom_vjp
def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max pool, stride 2, VALID padding: f[B, H, W, C] -> f[B, H // 2, W // 2, C]."""
  return _pool(x)


def _forward(x):
  y = _pool(x)
  return y, (x, y)


def _backward(residuals, g):
  """The cotangent of each window to its first maximum (row-major), zero elsewhere."""
  x, y = residuals
  windows = _windows(x)
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(2):
    row = []
    for j in range(2):
      if (i, j) == (1, 1):  # the last one takes what is left: exactly one per window, NaN too
        first = ~taken
      else:
        first = (windows[:, :, i, :, j] == y) & ~taken
        taken = taken | first
      row.append(jnp.where(first, g, jnp.zeros_like(g)))
    rows.append(jnp.stack(row, axis=3))  # [B, H/2, W/2, 2, C]
  grad = jnp.stack(rows, axis=2)  # [B, H/2, 2, W/2, 2, C]
  b, h, w, c = x.shape
  grad = grad.reshape(b, h - h % 2, w - w % 2, c)
  return (jnp.pad(grad, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_forward, _backward)
