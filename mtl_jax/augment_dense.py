"""On-device augmentation of images together with their label maps (per-pixel tasks).

    augment = augment_dense.make_dense_augment(tasks, flip_left_right=True,
                                               scales=(1.0, 1.2, 1.5))
    inputs, labels = augment(key, inputs, labels)     # [B, H, W, C], {task: [B, ...]}

The augmentation of the NYUv2 protocol of Nash-MTL and FAMO (Nash-MTL's
experiments/nyuv2/data.py: `RandomScaleCrop`, credited to lorenmt/mtan issue 34, then a
horizontal flip with probability 1/2), per example, keyed by the example's key:

- scale-crop: a factor s drawn uniformly from `scales`, a crop of int(H / s) x int(W / s) at
  a uniform position, resized back to H x W: the image and the normals bilinearly with aligned
  corners, class maps and depth to the nearest pixel (PyTorch's "nearest": source index
  floor(i * h / H)), and depth divided by s (a scene seen s times closer);
- flip: every map mirrored left-right, and the normals' x component negated.

Label maps move with the image by kind: `segmentation` (nearest), `depth` (nearest, / s),
`normals` (bilinear, x negated on a flip); per-example labels (label_shape () or (k,)) are
left as they are, and any other label map is refused. A missing normal (NaN) makes missing
every output pixel it would contribute to with a non-zero weight; Nash-MTL interpolates its
zero vectors instead, and like it, interpolated normals are not renormalised. Photometric
changes (`config.augment`'s brightness, contrast, ...) touch only the image and run after this.
Everything is a pure function of the key, jit-compatible, with static shapes.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from mtl_jax.tasks import Task

DenseAugmentFn = Callable[[jax.Array, jnp.ndarray, Mapping[str, jnp.ndarray]],
                          tuple[jnp.ndarray, dict]]
NEAREST, BILINEAR = "nearest", "bilinear"
MODES = {"segmentation": NEAREST, "depth": NEAREST, "normals": BILINEAR}


def is_map(task: Task) -> bool:
  """Whether the task's label is a map over the image (label_shape (H, W, ...))."""
  return len(task.label_shape) >= 2


def check_options(flip_left_right, scales) -> tuple[bool, tuple[float, ...]]:
  """(flip, scales) validated; ValueError naming the option otherwise."""
  if not isinstance(flip_left_right, bool):
    raise ValueError(f"flip_left_right must be True or False, got {flip_left_right!r}")
  try:
    values = tuple(float(s) for s in scales)
  except (TypeError, ValueError):
    raise ValueError(f"scales must be a tuple of numbers >= 1, got {scales!r}") from None
  if any(not math.isfinite(s) or s < 1 for s in values):
    raise ValueError(f"scales must be numbers >= 1 (crop factors), got {scales!r}")
  return flip_left_right, values


def make_dense_augment(tasks: Sequence[Task], *, flip_left_right: bool = False,
                       scales: Sequence[float] = ()) -> DenseAugmentFn | None:
  """`augment(key, inputs, labels) -> (inputs, labels)` for `tasks`, None if nothing is on.

  Raises ValueError for a bad option or a label map of a kind it cannot move.
  """
  flip, scales = check_options(flip_left_right, scales)
  if not flip and not scales:
    return None
  for task in tasks:
    if is_map(task) and task.kind not in MODES:
      raise ValueError(f"task {task.name!r}: a {task.kind} label of shape {task.label_shape} "
                       f"cannot follow the image; dense_augment moves {sorted(MODES)} maps")
  kinds = {t.name: t.kind for t in tasks if is_map(t)}
  scales = scales or (1.0,)

  def augment(key, inputs, labels):
    keys = jax.random.split(key, inputs.shape[0])
    maps = {name: labels[name] for name in kinds}
    inputs, moved = jax.vmap(lambda k, x, m: augment_example(k, x, m, kinds, flip, scales))(
        keys, inputs, maps)
    return inputs, {**labels, **moved}

  return augment


def augment_example(key: jax.Array, image: jnp.ndarray, maps: Mapping[str, jnp.ndarray],
                    kinds: Mapping[str, str], flip: bool,
                    scales: Sequence[float]) -> tuple[jnp.ndarray, dict]:
  """One example: image f32[H, W, C], maps {task: [H, W] or [H, W, 3]} of the `kinds`."""
  scale_key, row_key, col_key, flip_key = jax.random.split(key, 4)
  height, width = image.shape[:2]
  s = jnp.asarray(scales, jnp.float32)[jax.random.randint(scale_key, (), 0, len(scales))]
  h = jnp.floor(height / s).astype(jnp.int32)
  w = jnp.floor(width / s).astype(jnp.int32)
  top = jax.random.randint(row_key, (), 0, height - h + 1)
  left = jax.random.randint(col_key, (), 0, width - w + 1)
  mirrored = jax.random.bernoulli(flip_key) if flip else jnp.asarray(False)
  cols = jnp.arange(width)
  cols = jnp.where(mirrored, width - 1 - cols, cols)   # the flip follows the crop
  rows = jnp.arange(height)
  window = (rows, cols, top, left, h, w, height, width)
  image = _bilinear(image, *window)
  out = {}
  for name, kind in kinds.items():
    if MODES[kind] == NEAREST:
      moved = _nearest(maps[name], *window)
      out[name] = moved / s if kind == "depth" else moved
    else:
      moved = _bilinear(maps[name], *window)
      out[name] = moved.at[..., 0].multiply(jnp.where(mirrored, -1.0, 1.0))
  return image, out


def _nearest(x, rows, cols, top, left, h, w, height, width):
  """x's crop [top:top+h, left:left+w] resized to [height, width] by PyTorch's "nearest"."""
  r = top + jnp.floor(rows * h / height).astype(jnp.int32)
  c = left + jnp.floor(cols * w / width).astype(jnp.int32)
  return x[r][:, c]


def _bilinear(x, rows, cols, top, left, h, w, height, width):
  """The crop resized bilinearly with aligned corners; NaN where a NaN input has weight."""
  r = top + rows * (h - 1) / max(height - 1, 1)
  c = left + cols * (w - 1) / max(width - 1, 1)
  valid = ~jnp.isnan(x)
  values = _interpolate(jnp.where(valid, x, 0.0), r, c)
  covered = _interpolate(valid.astype(jnp.float32), r, c)
  return jnp.where(covered > 1 - 1e-5, values, jnp.nan)


def _interpolate(x, r, c):
  """Separable linear interpolation of x [H, W, ...] at rows r [H'] and columns c [W']."""
  def along(x, p, axis):
    low = jnp.clip(jnp.floor(p), 0, x.shape[axis] - 1).astype(jnp.int32)
    high = jnp.minimum(low + 1, x.shape[axis] - 1)
    frac = (p - low).reshape((-1,) + (1,) * (x.ndim - axis - 1))
    return jnp.take(x, low, axis) * (1 - frac) + jnp.take(x, high, axis) * frac
  return along(along(x, r, 0), c, 1)
