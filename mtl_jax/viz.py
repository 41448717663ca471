"""Figures: `augplot` shows what augmentation does, `curves` a run's training curves.

    import mtl_jax as mj
    mj.viz.augplot(train_labels.filepath.values, {"flip_left_right": True, "zoom_scale": 0.3})
    mj.viz.curves("/tmp/mtl_digits")   # also written to <workdir>/curves.png by every run

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


# ----------------------------------------------------------------------------------------------
# Figures of a run: its curves, and the gradient-cosine heat map of TensorBoard.

CURVES_FILE = "curves.png"


def _series(scalars: Mapping[str, Mapping[int, float]], prefix: str,
            suffix: str = "") -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{label: (steps, values)} of the tags "<prefix><label><suffix>", steps in order."""
  out = {}
  for tag, points in scalars.items():
    if tag.startswith(prefix) and tag.endswith(suffix):
      steps = np.array(sorted(points))
      out[tag[len(prefix):len(tag) - len(suffix)]] = (steps, np.array([points[s] for s in steps]))
  return out


def _validation_series(scalars) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{"<task> <metric>": ...} of each task's first validation metric other than its loss."""
  chosen = {}
  for tag in scalars:
    parts = tag.split("/")
    if len(parts) == 3 and parts[0] == "val" and parts[2] != "loss":
      chosen.setdefault(parts[1], tag)
  return {f"{task} {tag.split('/')[2]}": _series(scalars, tag)[""]
          for task, tag in chosen.items()}


class NoScalarsError(ValueError):
  """A workdir without scalars to draw."""


def curves(workdir: str | os.PathLike, save: str | os.PathLike | None = None):
  """A run's training curves as one figure: per task, the training loss, the validation
  metric, the task weight and (when logged) the cosines between task gradients.

  Reads the TensorBoard events files in `workdir` (`mtl_jax.events.read_scalars`); written
  to `<workdir>/curves.png` at the end of every run.

  Returns:
    The `matplotlib.figure.Figure` (made without pyplot: no global state changes).

  Raises:
    NoScalarsError: `workdir` holds no scalars (not a run's workdir, or nothing logged yet).
  """
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  from mtl_jax import events  # pylint: disable=import-outside-toplevel

  scalars = events.read_scalars(os.fspath(workdir))
  if not scalars:
    raise NoScalarsError(f"no TensorBoard scalars in {os.fspath(workdir)!r}: not a run's workdir, "
                         "or a run stopped before its first log")
  panels = [("training loss", _series(scalars, "train/", "/loss"), True),
            ("validation", _validation_series(scalars), False),
            ("task weight", _series(scalars, "weight/"), False),
            ("gradient cosine", _series(scalars, "grad_cosine/"), False)]
  figure = Figure(figsize=(4.2 * len(panels), 3.4))  # a fixed layout: constrained costs 2x
  figure.subplots_adjust(left=0.04, right=0.99, bottom=0.15, top=0.91, wspace=0.22)
  for ax, (title, series, log) in zip(figure.subplots(1, len(panels)), panels):
    ax.set_title(title)
    ax.set_xlabel("step")
    for label, (steps, values) in series.items():
      ax.plot(steps, values, label=label.replace("/", " / "), linewidth=1.2)
    if not series:
      ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes,
              color="gray")
      continue
    if log and all(v.min() > 0 for _, v in series.values()):
      ax.set_yscale("log")
    if title == "gradient cosine":
      ax.axhline(0.0, color="gray", linewidth=0.6)
    ax.legend(fontsize=7, ncol=1 + len(series) // 8)
  if save is not None:
    figure.savefig(save, format="png", dpi=90)
  return figure


def cosine_heatmap(cosines: np.ndarray, names: Sequence[str]) -> np.ndarray:
  """u8[1, H, W, 3]: the T x T cosines between task gradients as a labelled heat map (task
  names on both axes, each cell's value, a colour bar from -1 blue to +1 red)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  t = len(names)
  size = 2.6 + 0.35 * t
  figure = Figure(figsize=(size + 0.8, size), dpi=80, layout="constrained")
  canvas = FigureCanvasAgg(figure)
  ax = figure.subplots()
  image = ax.imshow(np.clip(np.nan_to_num(cosines), -1, 1), cmap="RdBu_r", vmin=-1, vmax=1)
  ax.set_xticks(range(t), names, rotation=90, fontsize=8)
  ax.set_yticks(range(t), names, fontsize=8)
  if t <= 12:
    for i in range(t):
      for j in range(t):
        ax.text(j, i, f"{cosines[i, j]:.2f}", ha="center", va="center", fontsize=7,
                color="white" if abs(cosines[i, j]) > 0.6 else "black")
  figure.colorbar(image, ax=ax, label="cosine of task gradients")
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[None, ..., :3].copy()
