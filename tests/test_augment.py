"""On-device augmentation: options are validated, each one does what it says, batches replay."""

import colorsys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mtl_jax import augment

KEY = jax.random.PRNGKey(0)


def _random_images(batch=4, height=16, width=16, channels=3, seed=1):
  return jax.random.uniform(jax.random.PRNGKey(seed), (batch, height, width, channels))


def _copies(image, batch=16):
  return jnp.broadcast_to(image, (batch,) + image.shape)


def _marker(size=16):
  """A square image, black but for one bright pixel near the top-left corner."""
  return jnp.zeros((size, size, 3)).at[2, 3].set(1.0)


def _augmented(params, images, key=KEY):
  return np.asarray(augment.make_augment(params)(key, images))


# Configuration -------------------------------------------------------------------------------


def test_true_means_the_documented_defaults():
  assert augment.resolve(True) == augment.DEFAULTS
  assert set(augment.DEFAULTS) == set(augment.OPTIONS)


@pytest.mark.parametrize("off", [False, None, {}])
def test_false_none_and_empty_mean_no_augmentation(off):
  assert augment.resolve(off) == {}
  assert augment.make_augment(augment.resolve(off)) is None


def test_options_all_off_give_no_augment_function():
  assert augment.make_augment({"flip_left_right": False, "zoom_scale": 0.0}) is None


def test_a_mapping_is_validated_and_kept_to_the_options_given():
  params = augment.resolve({"flip_left_right": np.True_, "brightness_delta": 1, "hue_delta": 0.1})
  assert params == {"flip_left_right": True, "brightness_delta": 1.0, "hue_delta": 0.1}
  assert type(params["brightness_delta"]) is float  # pylint: disable=unidiomatic-typecheck


def test_a_config_dict_is_read_like_a_mapping():
  config = ml_collections.ConfigDict({"rot90": True, "gaussian_blur": 0.25})
  assert augment.resolve(config) == {"rot90": True, "gaussian_blur": 0.25}


def test_an_unknown_option_is_named_beside_the_known_ones():
  with pytest.raises(ValueError, match="'flip_sideways'.*known.*flip_left_right"):
    augment.resolve({"flip_sideways": True})


@pytest.mark.parametrize("name, value", [
    ("flip_left_right", 0.5), ("gaussian_blur", 1.5), ("gaussian_blur", True),
    ("zoom_scale", 1.0), ("hue_delta", 0.6), ("brightness_delta", -0.1),
    ("gaussian_noise", "big"), ("contrast_delta", float("nan")),
])
def test_a_bad_value_is_rejected_naming_its_option(name, value):
  with pytest.raises(ValueError, match=f"'{name}'"):
    augment.resolve({name: value})


def test_something_neither_bool_nor_mapping_is_rejected():
  with pytest.raises(ValueError, match="augment must be"):
    augment.resolve("yes")


# The batch function ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 16, 16, 3), (4, 12, 20, 1)])
def test_defaults_keep_shape_dtype_and_range(shape):
  out = augment.make_augment(True)(KEY, jax.random.uniform(KEY, shape))
  assert out.shape == shape and out.dtype == jnp.float32
  assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_the_same_key_replays_the_batch_and_another_key_does_not():
  augment_batch, images = augment.make_augment(True), _random_images()
  first = np.asarray(augment_batch(KEY, images))
  np.testing.assert_array_equal(np.asarray(augment_batch(KEY, images)), first)
  assert not np.allclose(np.asarray(augment_batch(jax.random.PRNGKey(1), images)), first)


def test_equal_options_give_the_same_compiled_function():
  assert augment.make_augment({"rot90": True}) is augment.make_augment({"rot90": True,
                                                                        "zoom_scale": 0})


def test_each_example_draws_its_own_augmentation():
  out = _augmented({"brightness_delta": 0.2, "zoom_scale": 0.3}, _copies(_random_images()[0], 8))
  assert len({example.tobytes() for example in out}) == 8


FEW_OPTIONS = {"flip_left_right": True, "rot90": True, "zoom_scale": 0.3, "gaussian_noise": 0.1}
FEW_IMAGES = 8  # a batch the 8 devices split; the next three tests share its compiled augment


def test_it_runs_inside_a_jit_compiled_step():
  augment_batch, images = augment.make_augment(FEW_OPTIONS), _random_images(FEW_IMAGES)
  step = jax.jit(lambda key, images: augment_batch(jax.random.fold_in(key, 7), images).sum())
  expected = augment_batch(jax.random.fold_in(KEY, 7), images).sum()
  assert float(step(KEY, images)) == pytest.approx(float(expected), rel=1e-6)


def test_a_batch_sharded_over_devices_gives_the_same_result():
  assert jax.device_count() == FEW_IMAGES
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))  # as mtl_jax.sharding makes it
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  augment_batch, images = augment.make_augment(FEW_OPTIONS), _random_images(FEW_IMAGES)
  sharded = augment_batch(KEY, jax.device_put(images, sharding))
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(augment_batch(KEY, images)),
                             atol=1e-6)


def test_a_batch_under_explicit_sharding_gives_the_same_result():
  mesh = jax.make_mesh((jax.device_count(),), ("data",))  # explicit axes by default
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  augment_batch, images = augment.make_augment(FEW_OPTIONS), _random_images(FEW_IMAGES)
  with jax.set_mesh(mesh):
    sharded = augment_batch(KEY, jax.device_put(images, sharding))
  assert sharded.sharding.spec[0] == "data"
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(augment_batch(KEY, images)),
                             atol=1e-6)


# Each option alone ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, flip", [("flip_left_right", lambda x: x[:, ::-1]),
                                        ("flip_up_down", lambda x: x[::-1])])
def test_a_flip_reverses_the_image_or_leaves_it_about_half_the_time(name, flip):
  image = np.asarray(_random_images()[0])
  out = _augmented({name: True}, _copies(image))
  flipped = [np.array_equal(example, flip(image)) for example in out]
  unchanged = [np.array_equal(example, image) for example in out]
  assert all(f or u for f, u in zip(flipped, unchanged))
  assert 0 < sum(flipped) < len(out)


def test_rot90_turns_a_square_image_by_each_multiple_of_90_degrees():
  image = np.asarray(_marker())
  out = _augmented({"rot90": True}, _copies(image, 32))
  turns = [[np.array_equal(example, np.rot90(image, k)) for k in range(4)] for example in out]
  assert all(sum(match) == 1 for match in turns)
  assert np.all(np.any(turns, axis=0))  # every quarter turn occurs


def test_rot90_turns_a_non_square_image_by_0_or_180_degrees():
  image = np.asarray(_random_images(height=8, width=12)[0])
  out = _augmented({"rot90": True}, _copies(image))
  half_turns = [np.array_equal(example, image[::-1, ::-1]) for example in out]
  assert all(h or np.array_equal(example, image) for h, example in zip(half_turns, out))
  assert 0 < sum(half_turns) < len(out)


@pytest.mark.parametrize("bilinear", [False, True])
def test_flips_and_turns_resample_exactly_like_numpy(bilinear):
  image = np.asarray(_random_images(height=6, width=6)[0])
  resample = jax.jit(lambda flip_rows, flip_cols, turns: augment.resample(
      jnp.asarray(image), augment.geometry_matrix(flip_rows, flip_cols, turns, 1.0), bilinear))
  def transformed(flip_rows, flip_cols, turns):
    return np.asarray(resample(flip_rows, flip_cols, turns))
  np.testing.assert_array_equal(transformed(1, -1, 0), image[:, ::-1])
  np.testing.assert_array_equal(transformed(-1, 1, 0), image[::-1])
  for k in range(4):
    np.testing.assert_array_equal(transformed(1, 1, k), np.rot90(image, k))
  np.testing.assert_array_equal(transformed(-1, -1, 1), np.rot90(image[::-1, ::-1], 1))


def test_zoom_by_one_leaves_the_image_unchanged():
  image = _random_images()[0]
  np.testing.assert_allclose(np.asarray(augment.zoom(image, 1.0)), np.asarray(image), atol=1e-6)


def test_zoom_in_enlarges_a_centred_square_and_zoom_out_shrinks_it():
  image = jnp.zeros((16, 16, 1)).at[6:10, 6:10].set(1.0)
  assert float(augment.zoom(image, 2.0).sum()) > 2 * float(image.sum())
  assert float(augment.zoom(image, 0.5).sum()) < 0.5 * float(image.sum())


def test_zoom_scale_draws_factors_in_its_range():
  image = jnp.zeros((16, 16, 1)).at[4:12, 4:12].set(1.0)
  areas = _augmented({"zoom_scale": 0.2}, _copies(image)).sum(axis=(1, 2, 3))
  assert np.all(areas > 64 * 0.8**2 - 4) and np.all(areas < 64 * 1.2**2 + 4)
  assert areas.std() > 0


def test_gaussian_blur_preserves_a_constant_image_and_spreads_a_point():
  constant = jnp.full((8, 16, 16, 3), 0.3)
  np.testing.assert_allclose(_augmented({"gaussian_blur": 1.0}, constant), 0.3, atol=1e-6)
  point = jnp.zeros((16, 16, 1)).at[8, 8].set(1.0)
  blurred = np.asarray(augment.gaussian_blur(point, 1.0))
  assert blurred.max() < 0.5 and blurred.sum() == pytest.approx(1.0, abs=1e-5)
  assert np.count_nonzero(blurred > 1e-3) > 9


def test_gaussian_blur_with_probability_zero_point_five_blurs_some_images():
  image = np.asarray(_marker())
  out = _augmented({"gaussian_blur": 0.5}, _copies(image))
  assert 0 < sum(np.array_equal(example, image) for example in out) < len(out)


def test_brightness_shifts_every_pixel_by_one_delta_per_image():
  gray = jnp.full((8, 16, 16, 3), 0.5)
  shift = _augmented({"brightness_delta": 0.2}, gray) - 0.5
  per_image = shift.reshape(8, -1)
  np.testing.assert_allclose(per_image, per_image[:, :1] * np.ones_like(per_image), atol=1e-6)
  assert np.all(np.abs(per_image) <= 0.2 + 1e-6) and per_image[:, 0].std() > 0


def test_brightness_is_clipped_to_the_value_range():
  white = jnp.ones((8, 16, 16, 3))
  out = augment.make_augment({"brightness_delta": 0.5})(KEY, white)
  assert float(out.max()) <= 1.0 and float(out.min()) < 1.0
  unclipped = augment.make_augment({"brightness_delta": 0.5}, value_range=None)(KEY, white)
  assert float(unclipped.max()) > 1.0


def test_contrast_keeps_each_channels_mean_and_scales_the_spread():
  images = 0.4 + 0.2 * _random_images(batch=8)
  out = _augmented({"contrast_delta": 0.5}, images)
  np.testing.assert_allclose(out.mean(axis=(1, 2)), np.asarray(images.mean(axis=(1, 2))),
                             atol=1e-5)
  ratio = out.std(axis=(1, 2, 3)) / np.asarray(images.std(axis=(1, 2, 3)))
  assert np.all((ratio > 0.5 - 1e-4) & (ratio < 1.5 + 1e-4)) and ratio.std() > 0


def test_hsv_conversion_matches_colorsys_and_round_trips():
  rgb = np.random.default_rng(0).uniform(size=(64, 3)).astype(np.float32)
  hsv = np.asarray(augment.rgb_to_hsv(jnp.asarray(rgb)))
  np.testing.assert_allclose(hsv, [colorsys.rgb_to_hsv(*pixel) for pixel in rgb], atol=1e-6)
  np.testing.assert_allclose(np.asarray(augment.hsv_to_rgb(jnp.asarray(hsv))), rgb, atol=1e-6)


def test_a_hue_shift_of_a_third_turns_red_into_green():
  red = jnp.zeros((2, 2, 3)).at[..., 0].set(1.0)
  green = np.zeros((2, 2, 3), np.float32)
  green[..., 1] = 1.0
  np.testing.assert_allclose(np.asarray(augment.adjust_saturation_and_hue(red, 1.0, 1 / 3)),
                             green, atol=1e-6)


def test_saturation_and_hue_change_colours_but_not_grays_or_single_channel_images():
  params = {"saturation_delta": 0.5, "hue_delta": 0.2}
  colour = _random_images(batch=8)
  assert not np.allclose(_augmented(params, colour), np.asarray(colour), atol=1e-3)
  gray = jnp.broadcast_to(_random_images(batch=8, channels=1), (8, 16, 16, 3))
  np.testing.assert_allclose(_augmented(params, gray), np.asarray(gray), atol=1e-6)
  single = _random_images(batch=8, channels=1)
  np.testing.assert_array_equal(_augmented(params, single), np.asarray(single))


def test_drop_color_makes_every_channel_the_channel_mean():
  images = _random_images()
  out = _augmented({"drop_color": 1.0}, images)
  np.testing.assert_allclose(out, np.broadcast_to(images.mean(-1, keepdims=True), out.shape),
                             atol=1e-6)


def test_gaussian_noise_adds_noise_of_the_given_std():
  gray = jnp.full((4, 32, 32, 3), 0.5)
  noise = _augmented({"gaussian_noise": 0.05}, gray) - 0.5
  assert noise.std() == pytest.approx(0.05, rel=0.05)
  assert abs(noise.mean()) < 0.005
