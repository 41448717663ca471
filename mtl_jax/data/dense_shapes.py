"""Generated scenes for the per-pixel tasks, written in the NYUv2 layout `nyuv2.py` reads.

    root = mj.data.make_dense_shapes("/tmp/dense_shapes", 400)   # config.dataset.name = "nyuv2",
                                                                 # config.dataset.path = root
    config.dataset.name = "dense_shapes"   # the same scenes drawn in memory (load_dense_shapes)

Each scene is a tilted background plane (class 0) in front of which 1 to `max_shapes` objects
stand at random depths, nearer ones hiding farther ones: spheres (class 1), tilted boxes seen
as squares (class 2) and flat triangles facing the camera (class 3). Per pixel:

- `label`: the class of the visible surface; some scenes have a block of unlabelled pixels
  (-1), as NYUv2 has;
- `depth`: the visible surface's distance ([H, W, 1], about 0.9 to 4.2); some scenes have a
  hole of missing depth (0), as Kinect maps have;
- `normal`: the unit normal computed from the depth map, (-dz/dx, -dz/dy, 1) normalised with
  x, y in the depth's units (the image spans 4 of them); 0 where the depth is missing or jumps
  (an occlusion edge), where no surface normal is defined;
- `image`: the surface's colour (per class, jittered per object) shaded by the normal under a
  fixed light and dimmed with distance, plus noise; [H, W, 3] in [0, 1].

So every task is learnable from the image, and the three are related as NYUv2's are.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from mtl_jax.data import nyuv2
from mtl_jax.data.arrays import Dataset
from mtl_jax.data.nyuv2 import PARTS
from mtl_jax.errors import ConfigError

CLASSES = ("background", "sphere", "box", "triangle")
COLORS = np.array([[0.55, 0.55, 0.5], [0.85, 0.2, 0.2], [0.2, 0.7, 0.3], [0.2, 0.3, 0.85]])
SPAN = 4.0             # the image's width in depth units
EDGE_SLOPE = 3.0       # |grad z| above this (depth units per unit) is an occlusion edge
LIGHT = np.array([-0.4, -0.5, 0.77])
NOISE_STD = 0.02


def make_dense_shapes(directory: str, n: int, *, n_val: int | None = None,
                      size: Sequence[int] = (64, 64), max_shapes: int = 3,
                      seed: int = 0) -> str:
  """Writes `n` training and `n_val` (default max(1, n // 4)) validation scenes as
  `<directory>/{train,val}/{image,label,depth,normal}/<i>.npy`; returns `directory`.

  Everything is a function of `seed`. `size`: (height, width) of every map.
  """
  n_val = max(1, n // 4) if n_val is None else n_val
  for stream, (split, count) in enumerate((("train", n), ("val", n_val))):
    arrays = scenes(count, size, max_shapes, seed, stream)
    for part, stack in arrays.items():
      os.makedirs(os.path.join(directory, split, part), exist_ok=True)
      for i, array in enumerate(stack):
        np.save(os.path.join(directory, split, part, f"{i}.npy"), array)
  return directory


def load_dense_shapes(dataset_config) -> Dataset:
  """`config.dataset.name = "dense_shapes"`: the scenes drawn in memory, no files: train, val
  and test of `dataset_config.dense_shapes` (num_train, num_val, num_test, size, max_shapes),
  a function of `split_seed`. The train and val splits are those `make_dense_shapes` writes for
  the same seed, size and counts."""
  shapes = dataset_config.dense_shapes
  for key in ("num_train", "num_val", "num_test", "max_shapes"):
    if shapes[key] < 1:
      raise ConfigError(f"config.dataset.dense_shapes.{key} must be positive, got {shapes[key]}")
  size = tuple(shapes.size)
  if len(size) != 2 or min(size) < 1:
    raise ConfigError(f"config.dataset.dense_shapes.size must be (height, width), got {size}")
  parts = [scenes(count, size, shapes.max_shapes, dataset_config.split_seed, stream)
           for stream, count in enumerate((shapes.num_train, shapes.num_val, shapes.num_test))]
  for arrays in parts:
    arrays["depth"] = arrays["depth"][..., 0]
  return nyuv2.dataset_from_arrays(*parts)


def scenes(n: int, size: Sequence[int], max_shapes: int, seed: int,
           stream: int) -> dict[str, np.ndarray]:
  """{part: [n, ...]} of `n` scenes (the NYUv2 parts and shapes; see `scene`), a function of
  (seed, stream)."""
  rng = np.random.default_rng([seed, stream])
  drawn = [scene(rng, tuple(int(d) for d in size), max_shapes) for _ in range(n)]
  return {part: np.stack([d[k] for d in drawn]) for k, part in enumerate(PARTS)}


def scene(rng: np.random.Generator, size: tuple[int, int],
          max_shapes: int) -> tuple[np.ndarray, ...]:
  """(image f32[H, W, 3], label f32[H, W], depth f32[H, W, 1], normal f32[H, W, 3]) of one
  random scene, in the value ranges of the MTAN NYUv2 files."""
  h, w = size
  rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                           indexing="ij")
  unit = SPAN / w
  depth = 4.0 - 1.5 * rows / h + rng.uniform(-0.3, 0.3) * (cols / w - 0.5)
  label = np.zeros((h, w), np.int64)
  colour = np.broadcast_to(COLORS[0], (h, w, 3)).copy()
  for _ in range(rng.integers(1, max_shapes + 1)):
    kind = int(rng.integers(1, len(CLASSES)))
    surface = _surface(rng, kind, rows, cols, unit, min(h, w))
    visible = surface < depth
    depth = np.where(visible, surface, depth)
    label[visible] = kind
    colour[visible] = np.clip(COLORS[kind] + rng.uniform(-0.1, 0.1, 3), 0, 1)
  dz_dy, dz_dx = np.gradient(depth, unit)
  normal = np.stack([-dz_dx, -dz_dy, np.ones_like(depth)], axis=-1)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  edge = np.hypot(dz_dx, dz_dy) > EDGE_SLOPE
  shade = 0.35 + 0.65 * np.clip(normal @ (LIGHT / np.linalg.norm(LIGHT)), 0, 1)
  image = colour * shade[..., None] / (1 + 0.1 * depth[..., None])
  image = np.clip(image + rng.normal(0, NOISE_STD, image.shape), 0, 1)
  normal[edge] = 0
  if rng.random() < 0.5:                      # a hole in the depth sensor's map
    hole = _block(rng, h, w)
    depth[hole], normal[hole] = 0, 0
  label = label.astype(np.float32)
  if rng.random() < 0.5:                      # a block the annotators left unlabelled
    label[_block(rng, h, w)] = -1
  return (image.astype(np.float32), label, depth[..., None].astype(np.float32),
          normal.astype(np.float32))


def _surface(rng, kind: int, rows, cols, unit: float, side: int) -> np.ndarray:
  """The depth of one object's surface, +inf outside it."""
  r0, c0 = rng.uniform(0.15, 0.85) * rows.shape[0], rng.uniform(0.15, 0.85) * cols.shape[1]
  radius = rng.uniform(0.12, 0.25) * side
  d0 = rng.uniform(1.5, 3.0)
  dr, dc = rows - r0, cols - c0
  if kind == 1:    # sphere
    inside = dr ** 2 + dc ** 2 < radius ** 2
    bulge = np.sqrt(np.maximum(radius ** 2 - dr ** 2 - dc ** 2, 0)) * unit
    return np.where(inside, d0 + radius * unit - bulge, np.inf)
  if kind == 2:    # box face, tilted
    inside = (np.abs(dr) < radius) & (np.abs(dc) < radius)
    tilt = rng.uniform(-0.6, 0.6, 2)
    return np.where(inside, d0 + (tilt[0] * dr + tilt[1] * dc) * unit, np.inf)
  inside = (dr < radius) & (np.abs(dc) < (dr + radius) / 2)   # triangle, apex up
  return np.where(inside, d0, np.inf)


def _block(rng, h: int, w: int) -> tuple[slice, slice]:
  bh, bw = int(rng.integers(h // 8, h // 4 + 1)), int(rng.integers(w // 8, w // 4 + 1))
  r, c = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
  return slice(r, r + bh), slice(c, c + bw)
