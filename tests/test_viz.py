"""augplot: a grid of originals beside augmented versions, drawn from image files."""

import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from mtl_jax import viz


def _write_pngs(directory, count, size=(12, 16)):
  """`count` small RGB PNGs of different colours; their paths."""
  paths = []
  for i in range(count):
    pixels = np.zeros(size + (3,), np.uint8)
    pixels[..., i % 3] = 40 + 50 * i
    pixels[2:5, 3:9] = 255  # an off-centre block, so flips and turns show
    path = directory / f"image_{i}.png"
    Image.fromarray(pixels).save(path)
    paths.append(str(path))
  return paths


def test_augplot_draws_each_original_beside_its_augmentations_and_saves_a_png(tmp_path):
  paths = _write_pngs(tmp_path, 3)
  save = tmp_path / "augplot.png"
  figure = viz.augplot(paths, {"flip_left_right": True, "rot90": True, "brightness_delta": 0.2},
                       n=2, per_image=3, imshape=(16, 16), save=save)
  assert len(figure.axes) == 2 * (1 + 3)
  assert figure.axes[0].get_title().startswith("original")
  assert figure.axes[1].get_title() == "augmented 1"
  assert save.stat().st_size > 0
  assert Image.open(save).format == "PNG"


def test_augplot_takes_true_for_the_defaults_and_fewer_files_than_n(tmp_path):
  figure = viz.augplot(_write_pngs(tmp_path, 1), True, n=4, per_image=2, imshape=(16, 16),
                       num_channels=1)
  assert len(figure.axes) == 1 * (1 + 2)


def test_files_are_drawn_by_the_seed_and_keep_their_order():
  paths = [f"{i:02d}.png" for i in range(10)]
  chosen = viz.sample_paths(paths, 4, seed=3)
  assert chosen == viz.sample_paths(paths, 4, seed=3) == sorted(chosen)
  assert len(set(chosen)) == 4
  assert viz.sample_paths(paths[:3], 4) == paths[:3]


def test_no_augmentation_shows_unchanged_copies():
  images = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype(np.float32)
  versions = viz.augmented_versions(images, False, per_image=3)
  assert versions.shape == (3, 2, 8, 8, 3)
  np.testing.assert_array_equal(versions[2], images)


def test_an_unknown_option_fails_before_drawing(tmp_path):
  with pytest.raises(ValueError, match="'flip'"):
    viz.augplot(_write_pngs(tmp_path, 1), {"flip": True}, imshape=(16, 16))


def test_importing_viz_loads_neither_tensorflow_nor_matplotlib():
  code = ("import sys, mtl_jax.viz; "
          "print(sorted(m for m in ('tensorflow', 'matplotlib') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_the_cosine_heat_map_is_labelled_and_coloured_from_blue_to_red():
  cosines = np.array([[1.0, -1.0], [-1.0, 1.0]])
  image = viz.cosine_heatmap(cosines, ["digit", "parity"])
  assert image.dtype == np.uint8 and image.ndim == 4 and image.shape[0] == 1
  assert min(image.shape[1:3]) > 150  # room for the names and the colour bar (was 32x32)
  pixels = image[0].reshape(-1, 3).astype(int)
  red, blue = pixels[:, 0] - pixels[:, 2] > 60, pixels[:, 2] - pixels[:, 0] > 60
  assert red.sum() > 5000 and blue.sum() > 5000  # the +1 and -1 cells


def test_curves_of_a_directory_without_a_run_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="no TensorBoard scalars"):
    viz.curves(tmp_path)
