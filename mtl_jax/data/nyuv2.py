"""NYUv2 as the MTAN, Nash-MTL and FAMO experiments preprocess it, read from .npy files.

    <root>/{train,val}/{image,label,depth,normal}/<i>.npy          i = 0 .. N-1

The layout and value ranges of github.com/lorenmt/mtan (im2im_pred/create_dataset.py, whose
`NYUv2` class Nash-MTL's experiments/nyuv2/data.py copies): 795 training and 654 test scenes
at 288x384; `image` f32[H, W, 3] (RGB in [0, 1]), `label` f32[H, W] (13 classes, -1
unlabelled), `depth` f32[H, W, 1] (0 where missing), `normal` f32[H, W, 3] (in [-1, 1], 0
where missing). Tasks: `segmentation` (from `label`), `depth`, `normals` (from `normal`).

The protocol has no validation split (those papers report the test set, which their code calls
"val"), so here the `val` directory is both the validation and the test split. The data
cannot be downloaded here; `mtl_jax.data.make_dense_shapes` writes a generated set in the same
layout. `config.dataset.ignore_index` marks unlabelled pixels in other data (255 in
Cityscapes-style files); it becomes -1.
"""

from __future__ import annotations

import fnmatch
import os

import numpy as np

from mtl_jax import tasks as tasks_lib
from mtl_jax.data.arrays import Dataset, Split
from mtl_jax.errors import ConfigError

PARTS = ("image", "label", "depth", "normal")
TASKS = {"segmentation": "label", "depth": "depth", "normals": "normal"}


def load_nyuv2(dataset_config) -> Dataset:
  """The tasks and splits from `dataset_config.path`; classes 0 .. the largest label seen."""
  root = dataset_config.path
  if not root:
    raise ConfigError("config.dataset.path must name the NYUv2 directory (holding train/ and "
                      "val/) for config.dataset.name='nyuv2'")
  train = read_split(root, "train", dataset_config.ignore_index)
  val = read_split(root, "val", dataset_config.ignore_index)
  if val["image"].shape[1:3] != train["image"].shape[1:3]:
    raise ConfigError(f"{root}: val images are {val['image'].shape[1:3]}, train images "
                      f"{train['image'].shape[1:3]}")
  return dataset_from_arrays(train, val, val)


def dataset_from_arrays(train: dict, val: dict, test: dict) -> Dataset:
  """The three tasks and splits from {part: [N, ...]} arrays (`read_split`'s); splits given as
  the same dict share their arrays."""
  size = train["image"].shape[1:3]
  largest = max(int(part["label"].max()) for part in (train, val, test))
  tasks = (tasks_lib.Task("segmentation", "segmentation", tuple(range(max(largest + 1, 2))),
                          label_shape=size),
           tasks_lib.Task("depth", "depth", label_shape=size),
           tasks_lib.Task("normals", "normals", label_shape=size + (3,)))
  splits = {}
  for part in (train, val, test):
    if id(part) not in splits:
      splits[id(part)] = _split(tasks, part)
  return Dataset(tasks, *(splits[id(part)] for part in (train, val, test)))


def _split(tasks, arrays: dict) -> Split:
  return Split(arrays["image"], {t.name: tasks_lib.encode(t, arrays[TASKS[t.name]])
                                 for t in tasks})


def read_split(root: str, split: str, ignore_index: int = -1) -> dict[str, np.ndarray]:
  """{part: [N, ...]} of `<root>/<split>`: image f32[N, H, W, 3], label f32[N, H, W] (-1
  unlabelled), depth f32[N, H, W], normal f32[N, H, W, 3].

  Raises ConfigError naming the directory or file that is missing or has the wrong shape.
  """
  folder = os.path.join(root, split)
  for part in PARTS:
    if not os.path.isdir(os.path.join(folder, part)):
      raise ConfigError(f"{os.path.join(folder, part)}: no such directory (the NYUv2 layout "
                        "is <root>/{train,val}/{image,label,depth,normal}/<i>.npy)")
  count = len(fnmatch.filter(os.listdir(os.path.join(folder, "image")), "*.npy"))
  if count == 0:
    raise ConfigError(f"{os.path.join(folder, 'image')}: no .npy files")
  first = _load(folder, "image", 0)
  h, w = first.shape[:2]
  shapes = {"image": (h, w, 3), "label": (h, w), "depth": (h, w), "normal": (h, w, 3)}
  out = {part: np.empty((count,) + shape, np.float32) for part, shape in shapes.items()}
  for i in range(count):
    for part, shape in shapes.items():
      array = _load(folder, part, i)
      if part == "depth" and array.shape == (h, w, 1):
        array = array[..., 0]
      if array.shape != shape:
        raise ConfigError(f"{_path(folder, part, i)}: shape {array.shape}, expected {shape}"
                          + (" (or (H, W, 1))" if part == "depth" else ""))
      out[part][i] = array
  if ignore_index != -1:
    out["label"][out["label"] == ignore_index] = -1
  return out


def _path(folder: str, part: str, i: int) -> str:
  return os.path.join(folder, part, f"{i}.npy")


def _load(folder: str, part: str, i: int) -> np.ndarray:
  path = _path(folder, part, i)
  if not os.path.exists(path):
    raise ConfigError(f"{path}: missing (files are numbered 0 .. N-1, N the count of image "
                      "files)")
  try:
    return np.load(path)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path}: not a readable .npy file ({e})") from None
