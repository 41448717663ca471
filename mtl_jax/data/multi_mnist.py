"""MultiMNIST as Sener and Koltun build it: tasks `left` and `right`, 10 classes each.

Sener and Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018
(https://arxiv.org/abs/1810.04650), section 6.1; the images are built as in their code,
github.com/intel-isl/MultiObjectiveOptimization, multi_task/loaders/multi_mnist_loader.py
(commit 5d8e834):

- pairs (`read_image_file`, lines 227-230): every image of a split is the left digit of
  exactly one example; its right digit is an image of the same split drawn uniformly at random
  (`np.random.permutation(length)[:1]`: with replacement across examples, possibly itself).
  Their draw is unseeded; here it is a function of `split_seed` (`pair_rows`);
- canvas (lines 233-236): a 36x36 zero canvas, the left image at rows/columns 0:28, the right at
  6:34, the pixel-wise maximum where they overlap (6:28) (`canvas`);
- resize (line 237): `scipy.misc.imresize(canvas, (28, 28), interp='nearest')`, which first
  byte-scales the float canvas to 0..255 (divides by its maximum: a stretch only where both
  digits peak below 255) and then resizes with PIL's NEAREST, which samples canvas row/column
  floor((i + 0.5) * 36 / 28) for output i (`resize_nearest`; checked against PIL 13);
- labels (`read_label_file`, lines 207-210): left = the left image's digit, right = the right's.

Their training set is the 60,000 training images and their validation set the 10,000 test
images (multi_task/datasets.py, lines 22-26). Here, as in `mtl_jax.data.mnist`, a twelfth of
the training images (5,000, chosen by `split_seed`) are set aside first and paired among
themselves for validation, the rest among themselves for training; the test split pairs the
test images. So no source image appears in two splits. `flatten`, `normalize` (their
transform is (0.1307, 0.3081), datasets.py line 14) and `missing_fraction` work as for `mnist`.
"""

from __future__ import annotations

import numpy as np

from mtl_jax.data.arrays import Dataset, from_arrays, image_inputs, split_arrays
from mtl_jax.data.mnist import VAL_FRACTION, mnist_arrays

CANVAS = 36          # side of the canvas both digits are drawn on
RIGHT_OFFSET = 6     # the right digit's top-left corner on the canvas, (6, 6)
SIDE = 28            # side of the resized image (and of an MNIST digit)
PAIR_STREAM = 0x4D4D  # salt of the pairing generator: [split_seed, PAIR_STREAM, split index]


def load_multi_mnist(dataset_config) -> Dataset:
  """MultiMNIST from the MNIST arrays (`mnist_arrays`); inputs f32 [N, 28, 28, 1] in [0, 1].

  Train and validation pair the training images left after and set aside by `split_seed`
  (5,000 for validation); test pairs the test images. Which image is whose right digit is a
  function of `split_seed` (and of the split), so the whole dataset is.
  """
  train_x, train_y, test_x, test_y = mnist_arrays(dataset_config)
  train_rows, val_rows, _ = split_arrays(len(train_y), VAL_FRACTION, 0.0,
                                         dataset_config.split_seed)
  parts = [_part(train_x[rows], train_y[rows], dataset_config, index)
           for index, rows in enumerate((train_rows, val_rows))]
  parts.append(_part(test_x, test_y, dataset_config, 2))
  data = from_arrays(*parts[0], val=parts[1], test=parts[2])
  return data.blank_train_labels(dataset_config.missing_fraction, dataset_config.split_seed)


def _part(images: np.ndarray, labels: np.ndarray, dataset_config, index: int):
  left, right = pair_rows(len(images), dataset_config.split_seed, index)
  composite = resize_nearest(canvas(images[left], images[right]))
  return image_inputs(composite, dataset_config), {"left": labels[left], "right": labels[right]}


def pair_rows(n: int, seed: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(left, right) int [n]: row i's left digit is image i, its right one a uniform draw."""
  rng = np.random.default_rng([seed, PAIR_STREAM, stream])
  return np.arange(n), rng.integers(0, n, size=n)


def canvas(left: np.ndarray, right: np.ndarray) -> np.ndarray:
  """[N, 36, 36]: `left` [N, 28, 28] at the top left, `right` at (6, 6), their maximum where
  they overlap (rows and columns 6:28); zero elsewhere."""
  out = np.zeros((len(left), CANVAS, CANVAS), left.dtype)
  out[:, :SIDE, :SIDE] = left
  end = RIGHT_OFFSET + SIDE
  out[:, RIGHT_OFFSET:end, RIGHT_OFFSET:end] = np.maximum(
      out[:, RIGHT_OFFSET:end, RIGHT_OFFSET:end], right)
  return out


def resize_nearest(canvases: np.ndarray) -> np.ndarray:
  """uint8 [N, 28, 28]: `scipy.misc.imresize(c, (28, 28), interp='nearest')` of each canvas
  [N, H, W]: byte-scaled to 0..255 by its maximum (its minimum is 0; a blank canvas stays 0),
  then PIL's NEAREST, which reads row/column floor((i + 0.5) * H / 28) for output i."""
  rows = np.floor((np.arange(SIDE) + 0.5) * canvases.shape[1] / SIDE).astype(np.int64)
  cols = np.floor((np.arange(SIDE) + 0.5) * canvases.shape[2] / SIDE).astype(np.int64)
  small = canvases[:, rows][:, :, cols]
  peak = canvases.reshape(len(canvases), -1).max(axis=1).astype(np.float64)
  out = small.astype(np.uint8)
  dim = (peak > 0) & (peak != 255)  # scipy's bytescale: (x - 0) * (255 / max) + 0.5, floored
  out[dim] = np.floor(small[dim].astype(np.float64) * (255.0 / peak[dim])[:, None, None]
                      + 0.5).clip(0, 255).astype(np.uint8)
  return out
