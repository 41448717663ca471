"""Augmentation of images with their label maps: every map follows the image's pixels."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mtl_jax import augment_dense, build, config as config_lib
from mtl_jax.errors import ConfigError
from mtl_jax.tasks import Task

H, W, B = 8, 12, 16
TASKS = (Task("seg", "segmentation", tuple(range(H * W)), label_shape=(H, W)),
         Task("depth", "depth", label_shape=(H, W)),
         Task("normals", "normals", label_shape=(H, W, 3)),
         Task("scene", "classification", ("a", "b")))


def _batch():
  """Images whose channels are each pixel's (row, column), a class map numbering the pixels,
  depth 2, normals (0.6, 0, 0.8) and one missing (NaN) normal, per-image labels."""
  rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
  image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.float32)
  normals = np.broadcast_to(np.array([0.6, 0.0, 0.8], np.float32), (H, W, 3)).copy()
  normals[0, 0] = np.nan
  labels = {"seg": np.broadcast_to(rows * W + cols, (B, H, W)).astype(np.int32),
            "depth": np.full((B, H, W), 2.0, np.float32),
            "normals": np.broadcast_to(normals, (B, H, W, 3)),
            "scene": np.arange(B, dtype=np.int32) % 2}
  return jnp.asarray(np.broadcast_to(image, (B, H, W, 3))), jax.tree.map(jnp.asarray, labels)


# The protocol's augmentation, compiled once for every test.
_AUGMENT = jax.jit(augment_dense.make_dense_augment(TASKS, flip_left_right=True,
                                                   scales=(1.0, 1.5, 2.0)))


def _augmented(key):
  return jax.tree.map(np.asarray, _AUGMENT(key, *_batch()))


def test_a_flip_mirrors_every_map_and_negates_the_normals_x():
  images, labels = _augmented(jax.random.PRNGKey(1))
  whole = labels["depth"][:, 0, 0] == 2.0        # scale 1: the whole image, maybe mirrored
  images, labels = images[whole], jax.tree.map(lambda y: y[whole], labels)
  flipped = images[:, 0, 0, 1] == W - 1
  assert 0 < flipped.sum() < len(flipped)        # each example draws its own flip
  seg_rows, seg_cols = labels["seg"] // W, labels["seg"] % W
  np.testing.assert_allclose(images[..., 0], seg_rows, atol=1e-5)  # bilinear at whole pixels
  np.testing.assert_allclose(images[..., 1], seg_cols, atol=1e-5)
  x = labels["normals"][:, 1, 1, 0]
  np.testing.assert_array_equal(x, np.where(flipped, -0.6, 0.6).astype(np.float32))
  np.testing.assert_array_equal(labels["scene"], np.arange(B)[whole] % 2)  # per-image: kept


def test_a_scale_crop_keeps_maps_within_a_pixel_of_the_image_and_divides_depth():
  images, labels = _augmented(jax.random.PRNGKey(2))
  scale = 2.0 / labels["depth"][:, 0, 0]
  assert set(np.round(scale, 5)) == {1.0, 1.5, 2.0}
  np.testing.assert_array_equal(labels["depth"], np.broadcast_to(  # one s a map
      labels["depth"][:, :1, :1], labels["depth"].shape))
  seg_rows, seg_cols = labels["seg"] // W, labels["seg"] % W      # nearest: source pixels
  assert np.abs(seg_rows - images[..., 0]).max() < 1 and np.abs(seg_cols - images[..., 1]).max() < 1
  zoomed = scale > 1  # a crop of int(H / s) rows spread over H rows
  assert (seg_rows[zoomed].max(axis=(1, 2)) - seg_rows[zoomed].min(axis=(1, 2)) < H - 1).all()


def test_a_missing_normal_stays_missing_where_it_has_weight_and_nowhere_else():
  _, labels = _augmented(jax.random.PRNGKey(3))
  missing = np.isnan(labels["normals"]).any(-1)
  whole = labels["depth"][:, 0, 0] == 2.0
  assert whole.any() and (missing[whole].sum(axis=(1, 2)) == 1).all()  # the pixel or its mirror
  assert (missing[~whole].sum(axis=(1, 2)) <= 4).all()  # zoomed: the pixels it weighs in
  valid = labels["normals"][~missing]
  np.testing.assert_allclose(np.abs(valid), np.broadcast_to([0.6, 0.0, 0.8], valid.shape))


def test_the_same_key_gives_the_same_batch():
  first, again = _augmented(jax.random.PRNGKey(5)), _augmented(jax.random.PRNGKey(5))
  jax.tree.map(np.testing.assert_array_equal, first, again)


def test_nothing_switched_on_gives_no_augmentation_and_bad_options_are_refused():
  assert augment_dense.make_dense_augment(TASKS) is None
  with pytest.raises(ValueError, match="scales must be numbers >= 1"):
    augment_dense.make_dense_augment(TASKS, scales=(0.5,))
  with pytest.raises(ValueError, match="cannot follow the image"):
    augment_dense.make_dense_augment([Task("r", "regression", label_shape=(H, W))],
                                     flip_left_right=True)


@pytest.mark.parametrize("key, value, message", [
    ("augment", {"flip_left_right": True}, "moves the images but not the label maps"),
    ("dense_augment", {"scales": (1.0, 0.8)}, "config.dense_augment.scales must be"),
    ("dense_augment", {"flip_left_right": "yes"}, "flip_left_right")])
def test_the_config_refuses_augmentation_that_would_misalign_maps(key, value, message):
  config = config_lib.default_config()
  config[key] = ml_collections.ConfigDict({**config[key].to_dict(), **value})
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(config_lib.complete(config), num_devices=1)
    build.dense_augment(config_lib.complete(config), TASKS)
