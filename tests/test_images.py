"""Decoding image files to f32[H, W, C], and finding the files that cannot be decoded."""

import numpy as np
import pytest
from PIL import Image

from mtl_jax.data import images


def _save(tmp_path, name, array, mode=None, **kwargs):
  path = str(tmp_path / name)
  image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
  image.save(path, **kwargs)
  return path


def _gradient(height=8, width=12):
  """u8[H, W, 3]: red rises along x, green along y, blue constant."""
  y, x = np.mgrid[:height, :width]
  return np.stack([x * 20, y * 30, np.full_like(x, 100)], -1).astype(np.uint8)


def test_rgb_png_keeps_its_values_divided_by_norm(tmp_path):
  path = _save(tmp_path, "rgb.png", _gradient())
  out = images.decode_image(path, imshape=(8, 12))
  assert out.dtype == np.float32 and out.shape == (8, 12, 3)
  np.testing.assert_allclose(out, _gradient() / 255.0, atol=1e-6)
  np.testing.assert_allclose(images.decode_image(path, (8, 12), norm=1.0), _gradient())


def test_images_are_resized_bilinearly_to_imshape(tmp_path):
  path = _save(tmp_path, "rgb.png", _gradient())
  out = images.decode_image(path, imshape=(16, 6))
  assert out.shape == (16, 6, 3)
  assert (np.diff(out[0, :, 0]) > 0).all() and (np.diff(out[:, 0, 1]) >= 0).all()
  assert 0.0 <= out.min() and out.max() <= 1.0


def test_grayscale_is_repeated_to_num_channels_or_kept_as_one(tmp_path):
  gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
  path = _save(tmp_path, "gray.png", gray)
  three = images.decode_image(path, imshape=(6, 8))
  assert three.shape == (6, 8, 3)
  for c in range(3):
    np.testing.assert_allclose(three[..., c], gray / 255.0, atol=1e-6)
  assert images.decode_image(path, imshape=(6, 8), num_channels=1).shape == (6, 8, 1)


def test_colour_with_one_channel_becomes_grayscale(tmp_path):
  path = _save(tmp_path, "rgb.png", np.full((4, 4, 3), (255, 0, 0), np.uint8))
  out = images.decode_image(path, imshape=(4, 4), num_channels=1)
  assert out.shape == (4, 4, 1)
  np.testing.assert_allclose(out, 76 / 255.0, atol=1e-6)  # luma of pure red: 0.299 * 255


def test_rgba_is_composited_on_black(tmp_path):
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[...] = (200, 100, 50, 255)
  rgba[:2, :, 3] = 0  # top half fully transparent
  rgba[2:, :2, 3] = 128
  path = _save(tmp_path, "rgba.png", rgba)
  out = images.decode_image(path, imshape=(4, 4), norm=1.0)
  assert out.shape == (4, 4, 3)
  np.testing.assert_array_equal(out[:2], 0.0)
  np.testing.assert_allclose(out[2:, :2], np.broadcast_to([100, 50, 25], (2, 2, 3)), atol=1.0)
  np.testing.assert_array_equal(out[2:, 2:], np.broadcast_to([200, 100, 50], (2, 2, 3)))


def test_sixteen_bit_png_and_tiff_are_scaled_to_the_eight_bit_range(tmp_path):
  values = np.array([[0, 257, 32896, 65535]], np.uint16).repeat(2, axis=0)
  for name in ("deep.png", "deep.tif"):
    path = _save(tmp_path, name, values)
    out = images.decode_image(path, imshape=(2, 4))
    assert out.shape == (2, 4, 3)
    np.testing.assert_allclose(out[0, :, 0], [0.0, 1 / 255, 128 / 255, 1.0], atol=1e-6)
    assert images.decode_image(path, imshape=(4, 8)).max() <= 1.0 + 1e-6  # resized as floats


def test_jpeg_and_tiff_decode_to_the_right_shape_and_range(tmp_path):
  flat = np.full((32, 32, 3), (30, 140, 220), np.uint8)
  jpeg = _save(tmp_path, "photo.jpg", flat, quality=95)
  tiff = _save(tmp_path, "scan.tif", flat)
  for path in (jpeg, tiff):
    out = images.decode_image(path, imshape=(16, 16))
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), np.array([30, 140, 220]) / 255.0,
                               atol=3 / 255)


def test_single_channel_reads_the_first_channel_and_stacks_it(tmp_path):
  path = _save(tmp_path, "rgb.png", _gradient())
  out = images.decode_image(path, imshape=(8, 12), num_channels=3, single_channel=True)
  for c in range(3):
    np.testing.assert_allclose(out[..., c], _gradient()[..., 0] / 255.0, atol=1e-6)


def test_one_bit_images_decode_as_gray(tmp_path):
  path = _save(tmp_path, "mask.png", np.eye(4, dtype=np.uint8) * 255, mode="1")
  np.testing.assert_array_equal(images.decode_image(path, imshape=(4, 4))[..., 2], np.eye(4))


def test_palette_images_decode_as_colour(tmp_path):
  path = _save(tmp_path, "palette.png", _gradient(), mode="P")
  assert images.decode_image(path, imshape=(8, 12)).shape == (8, 12, 3)


def test_colour_cannot_give_two_channels(tmp_path):
  path = _save(tmp_path, "rgb.png", _gradient())
  with pytest.raises(ValueError, match="num_channels=2"):
    images.decode_image(path, imshape=(8, 12), num_channels=2)


def _bad_files(tmp_path):
  good = _save(tmp_path, "good.png", _gradient())
  truncated = str(tmp_path / "truncated.png")
  with open(good, "rb") as f:
    data = f.read()
  with open(truncated, "wb") as f:
    f.write(data[: len(data) // 2])
  text = tmp_path / "notes.png"
  text.write_text("not an image")
  return [good, str(tmp_path / "missing.png"), truncated, str(text)]


def test_find_bad_files_lists_missing_and_undecodable_files_in_order(tmp_path):
  paths = _bad_files(tmp_path)
  assert images.find_bad_files(paths, num_workers=2) == paths[1:]
  assert images.find_bad_files(paths[:1] * 3) == []


def test_find_bad_files_can_check_with_the_pipeline_decoder(tmp_path):
  paths = _bad_files(tmp_path)
  two_channels = images.image_decoder((8, 8), num_channels=2)  # colour images fail this one
  assert images.find_bad_files(paths, decode=images.image_decoder((8, 8))) == paths[1:]
  assert images.find_bad_files(paths[:1], decode=two_channels) == paths[:1]


def test_cached_decodes_each_path_once(tmp_path):
  path = _save(tmp_path, "rgb.png", _gradient())
  calls = []
  decode = images.cached(lambda p: calls.append(p) or images.decode_image(p, (8, 12)))
  first, second = decode(path), decode(path)
  assert calls == [path] and first is second and not first.flags.writeable
