"""A generated image dataset to try the image trainer on: one coloured shape per PNG.

    train_csv, val_csv = mj.data.make_shapes("/tmp/shapes", 2000, missing=0.3)

Each image shows one shape on a plain or noisy gray background. Tasks:

- `shape`: circle, square or triangle (upright);
- `color`: red, green or blue (each channel jittered by up to +-30);
- `size`: small (radius 8-14% of the width) or large (20-28%);
- `x`: regression, the shape's centre x position divided by the width, in [0, 1].

Position and background vary freely, so x is learnable only from the image. The CSVs hold a
`filepath` column of absolute paths and one column per task; a fraction `missing` of each task's
labels is blank (independently per task and split).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210)}
SIZES = {"small": (0.08, 0.14), "large": (0.20, 0.28)}  # radius / image width
TASKS = ("shape", "color", "size", "x")
TASK_TYPES = {"x": "regression"}
COLOR_JITTER = 30
NOISE_STD = 20.0


def make_shapes(directory: str, n: int, missing: float = 0.3, seed: int = 0,
                imshape: Sequence[int] = (64, 64),
                val_fraction: float = 0.2) -> tuple[str, str]:
  """Draws `n` shape images into `directory`/images and writes the label CSVs.

  Args:
    directory: where `images/`, `train_labels.csv` and `val_labels.csv` go (created).
    n: number of images; the last round(n * val_fraction) form the val split.
    missing: fraction of each task's labels left blank in each split.
    seed: everything (images, labels, blanks) is a function of it.
    imshape: (height, width) of the images.
    val_fraction: fraction of images in the val split.

  Returns:
    (train_csv_path, val_csv_path).
  """
  if not 0.0 <= missing < 1.0:
    raise ValueError(f"missing must be in [0, 1), got {missing}")
  rng = np.random.default_rng(seed)
  image_dir = os.path.join(os.path.abspath(directory), "images")
  os.makedirs(image_dir, exist_ok=True)
  print(f"drawing {n:,} images into {image_dir}...", flush=True)  # a long silence otherwise
  rows = []
  for i in range(n):
    path = os.path.join(image_dir, f"shape_{i:05d}.png")
    image, labels = draw_example(rng, imshape)
    image.save(path, compress_level=1)
    rows.append({"filepath": path, **labels})
  frame = pd.DataFrame(rows, columns=["filepath", *TASKS])
  n_val = int(round(n * val_fraction))
  splits = {"train": frame.iloc[:n - n_val], "val": frame.iloc[n - n_val:]}
  csv_paths = []
  for name, split in splits.items():
    csv_path = os.path.join(os.path.abspath(directory), f"{name}_labels.csv")
    blank_labels(split, TASKS, missing, rng).to_csv(csv_path, index=False)
    csv_paths.append(csv_path)
  return tuple(csv_paths)


def draw_example(rng: np.random.Generator, imshape: Sequence[int]) -> tuple[Image.Image, dict]:
  """One RGB image and its labels {shape, color, size, x}, drawn from `rng`."""
  height, width = imshape
  shape, color, size = (rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(list(SIZES)))
  radius = rng.uniform(*SIZES[size]) * width
  cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
  image = Image.fromarray(_background(rng, height, width))
  fill = tuple(int(c) for c in np.clip(
      np.array(COLORS[color]) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255))
  draw = ImageDraw.Draw(image)
  if shape == "circle":
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
  else:
    draw.polygon(_outline(shape, cx, cy, radius), fill=fill)
  labels = {"shape": str(shape), "color": str(color), "size": str(size),
            "x": round(float(cx / width), 4)}
  return image, labels


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """u8[H, W, 3]: a gray level, plain or (half the time) with gray Gaussian noise."""
  level = rng.uniform(20, 235)
  gray = np.full((height, width), level)
  if rng.random() < 0.5:
    gray = gray + rng.normal(0.0, NOISE_STD, (height, width))
  return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def _outline(shape: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
  """Vertices of an upright square (half-side `radius`) or triangle (circumradius `radius`)."""
  if shape == "square":
    return [(cx - radius, cy - radius), (cx + radius, cy - radius),
            (cx + radius, cy + radius), (cx - radius, cy + radius)]
  angles = np.deg2rad([-90.0, 30.0, 150.0])
  return [(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in angles]


def blank_labels(frame: pd.DataFrame, tasks: Sequence[str], missing: float,
                 rng: np.random.Generator) -> pd.DataFrame:
  """A copy of `frame` with round(missing * len) random cells of each task column blanked."""
  frame = frame.copy()
  for task in tasks:
    rows = rng.choice(len(frame), size=int(round(missing * len(frame))), replace=False)
    column = frame[task].astype(object)
    column.iloc[rows] = None
    frame[task] = column
  return frame
