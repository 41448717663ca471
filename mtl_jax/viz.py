"""Figures for looking at data before training: `augplot` shows what augmentation does.

    import mtl_jax as mj
    mj.viz.augplot(train_labels.filepath.values, {"flip_left_right": True, "zoom_scale": 0.3})

matplotlib is imported when a figure is drawn, not with this module. Figures are made through
pyplot, which uses the non-interactive Agg backend when there is no display, and are then
closed in pyplot so that a notebook shows the returned figure once and a loop of calls does not
accumulate open figures: display the return value, or pass `save=` (or call `.savefig`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from mtl_jax import augment
from mtl_jax.data.images import decode_image

_CELL_INCHES = 2.0


def sample_paths(filepaths: Sequence[str], n: int, seed: int = 0) -> list[str]:
  """`n` of `filepaths`, drawn without replacement by `seed`, kept in their given order.

  All of them when there are no more than `n`.
  """
  paths = [os.fspath(p) for p in filepaths]
  if not paths:
    raise ValueError("augplot needs at least one file path")
  if len(paths) <= n:
    return paths
  chosen = np.random.default_rng(seed).choice(len(paths), size=n, replace=False)
  return [paths[i] for i in sorted(chosen)]


def augmented_versions(images: np.ndarray, aug_params: bool | Mapping[str, Any] | None,
                       per_image: int, seed: int = 0) -> np.ndarray:
  """f32[per_image, B, H, W, C]: `per_image` augmentations of the batch `images`.

  Version j augments the batch with key `fold_in(PRNGKey(seed), j)`, exactly as
  `augment.make_augment` does inside training; with no augmentation the copies are unchanged.
  """
  augment_batch = augment.make_augment(augment.resolve(aug_params))
  if augment_batch is None:
    return np.broadcast_to(images, (per_image,) + images.shape)
  key = jax.random.PRNGKey(seed)
  return np.stack([np.asarray(augment_batch(jax.random.fold_in(key, j), images))
                   for j in range(per_image)])


def _displayable(image: np.ndarray) -> np.ndarray:
  """f32[H, W] or f32[H, W, 3] in [0, 1] for `imshow`: one channel, or the first three."""
  image = np.clip(image, 0.0, 1.0)
  return image[..., :3] if image.shape[-1] >= 3 else image[..., 0]


def augplot(filepaths: Sequence[str], aug_params: bool | Mapping[str, Any] | None, n: int = 4,
            per_image: int = 3, imshape: Sequence[int] = (128, 128), num_channels: int = 3,
            seed: int = 0, save: str | os.PathLike | None = None):
  """A grid of images, each original beside `per_image` augmented versions of it.

  Args:
    filepaths: image file paths (a list, array or pandas Series); `n` of them are drawn by
      `seed` when more are given.
    aug_params: augmentation options as for `MultiTaskTrainer(augment=...)`: a dict of options,
      True for `augment.DEFAULTS`, False or None for none.
    n: images to show, one per row.
    per_image: augmented versions per image, one per column after the original.
    imshape: (height, width) the images are resized to, as in training.
    num_channels: channels the images are decoded to.
    seed: draws the files and the augmentations; the same seed gives the same figure.
    save: if given, the figure is also written there as a PNG.

  Returns:
    The `matplotlib.figure.Figure`, with n x (1 + per_image) axes.

  Raises:
    ValueError: no paths, or augmentation options that `augment.resolve` rejects.
    OSError: a file is missing or cannot be decoded.
  """
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

  paths = sample_paths(filepaths, n, seed)
  images = np.stack([decode_image(p, imshape=tuple(imshape), num_channels=num_channels)
                     for p in paths])
  versions = augmented_versions(images, aug_params, per_image, seed)

  columns, (height, width) = 1 + per_image, images.shape[1:3]
  cell_width = _CELL_INCHES * min(width / height, 2.0)
  figure = plt.figure(figsize=(cell_width * columns, (_CELL_INCHES + 0.4) * len(paths)),
                      layout="constrained")
  axes = figure.subplots(len(paths), columns, squeeze=False)
  for row, path in enumerate(paths):
    cells = [images[row]] + [versions[j, row] for j in range(per_image)]
    titles = [f"original\n{os.path.basename(path)[:24]}"] + [
        f"augmented {j + 1}" for j in range(per_image)]
    for ax, image, title in zip(axes[row], cells, titles):
      ax.imshow(_displayable(image), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_title(title, fontsize=8)
      ax.set_axis_off()
  plt.close(figure)
  if save is not None:
    figure.savefig(save, format="png", dpi=100)
  return figure
