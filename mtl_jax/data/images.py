"""Image files to float32 arrays, and finding the files that cannot be read.

`decode_image` reads PNG, JPEG, TIFF (and anything else Pillow opens) into f32[H, W, C]:

- 8-bit images keep their values 0..255; 16-bit grayscale (PNG/TIFF mode "I;16") is brought to
  the same range by dividing by 257 (65535 -> 255), so one `norm` fits a folder of mixed bit
  depths. 32-bit integer ("I") and float ("F") images keep their values. Pillow itself reads
  16-bit colour PNGs as 8-bit RGB.
- Grayscale becomes `num_channels` copies of its one channel (or stays one channel when
  `num_channels == 1`); a colour image with `num_channels == 1` becomes grayscale (ITU-R 601-2
  luma).
- Transparency (RGBA, LA, palette with transparency) is composited on black: each colour value
  is multiplied by alpha / 255, so fully transparent pixels are 0 whatever colour they store.
- The image is resized to `imshape` with Pillow's bilinear filter (which antialiases when
  shrinking). Large JPEGs are first decoded at a reduced DCT scale no smaller than `imshape`
  (Pillow's `draft`), which is much faster and changes values only slightly.
- Finally every value is divided by `norm`.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

SIXTEEN_BIT_SCALE = 257.0  # 65535 / 255: 16-bit values to the 8-bit range
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_HIGH_DEPTH_MODES = _SIXTEEN_BIT_MODES + ("I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def decode_image(path: str, imshape: Sequence[int] = (256, 256), num_channels: int = 3,
                 norm: float = 255.0, single_channel: bool = False) -> np.ndarray:
  """The image at `path` as f32[H, W, num_channels] (see the module docstring for the rules).

  Args:
    path: an image file Pillow can open.
    imshape: (height, width) of the output.
    num_channels: channels of the output: 1, 3, or any count for a one-channel image.
    norm: every value is divided by this (255 maps 8-bit images to [0, 1]).
    single_channel: read only the first channel (band) of the file and repeat it
      `num_channels` times, for one-channel data saved as RGB.

  Raises:
    OSError: the file is missing or Pillow cannot decode it.
    ValueError: the image's channels cannot give `num_channels`.
  """
  height, width = imshape
  with Image.open(path) as image:
    if image.format == "JPEG":
      image.draft(image.mode, (width, height))
    image.load()
    image = _gray_or_rgb(image, path, num_channels, single_channel)
  array = _as_float(_resize(image, (width, height)))
  array /= np.float32(norm)
  if array.ndim == 2:
    array = np.repeat(array[..., None], num_channels, axis=-1)
  return array


def _gray_or_rgb(image: Image.Image, path: str, num_channels: int,
                 single_channel: bool) -> Image.Image:
  """One band (8-bit "L" or a high-depth mode) or 8-bit "RGB", with alpha composited."""
  if image.mode == "P":
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  if single_channel:
    return image.getchannel(0) if len(image.getbands()) > 1 else image
  if image.mode == "1":
    return image.convert("L")
  if image.mode in _HIGH_DEPTH_MODES or image.mode == "L":
    return image
  if image.mode in _ALPHA_MODES:
    image = _on_black(image)
  if image.mode not in ("L", "RGB"):
    image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV
  if image.mode == "RGB" and num_channels == 1:
    image = image.convert("L")
  if image.mode == "RGB" and num_channels != 3:
    raise ValueError(f"{path}: a colour image cannot give num_channels={num_channels} "
                     "(use 1 or 3, or single_channel=True)")
  return image


def _on_black(image: Image.Image) -> Image.Image:
  """An image with alpha composited on black: "LA" -> "L", otherwise "RGB"."""
  gray = image.mode in ("LA", "La")
  image = image.convert("RGBA")
  black = Image.new("RGBA", image.size, (0, 0, 0, 255))
  return Image.alpha_composite(black, image).convert("L" if gray else "RGB")


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
  if image.size == size:
    return image
  if image.mode in _HIGH_DEPTH_MODES and image.mode != "F":
    return _as_float_image(image).resize(size, Image.Resampling.BILINEAR)
  return image.resize(size, Image.Resampling.BILINEAR)


def _as_float_image(image: Image.Image) -> Image.Image:
  """A high-depth band as mode "F", 16-bit values already divided by 257."""
  return Image.fromarray(_as_float(image))  # f32[H, W] -> mode "F"


def _as_float(image: Image.Image) -> np.ndarray:
  """A new f32[H, W] or f32[H, W, 3]; 16-bit values divided by 257."""
  array = np.array(image, dtype=np.float32)
  if image.mode in _SIXTEEN_BIT_MODES:
    array /= np.float32(SIXTEEN_BIT_SCALE)
  return array


def image_decoder(imshape: Sequence[int], num_channels: int = 3, norm: float = 255.0,
                  single_channel: bool = False) -> Callable[[str], np.ndarray]:
  """`decode_image` with its options fixed: path -> f32[H, W, C], for the pipelines."""
  return functools.partial(decode_image, imshape=tuple(imshape), num_channels=num_channels,
                           norm=norm, single_channel=single_channel)


def cached(decode: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
  """`decode` remembering every image it returns, by path (thread-safe).

  For splits that fit in memory: f32 images take H * W * C * 4 bytes each (48 KiB at
  64x64x3). The returned arrays are read-only, shared between the batches that use them.
  """
  store: dict[str, np.ndarray] = {}
  lock = threading.Lock()

  def decode_cached(path: str) -> np.ndarray:
    image = store.get(path)
    if image is None:
      image = decode(path)
      image.flags.writeable = False
      with lock:
        image = store.setdefault(path, image)
    return image

  return decode_cached


def _is_readable(path: str) -> bool:
  """Whether `path` is a file Pillow can identify, verify and fully decode."""
  if not os.path.isfile(path):
    return False
  try:
    with Image.open(path) as image:
      image.verify()  # checksums (PNG CRCs) without decoding
    with Image.open(path) as image:
      image.load()  # truncated or corrupt data
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
    return False
  return True


def _decodes(decode: Callable[[str], np.ndarray], path: str) -> bool:
  if not os.path.isfile(path):
    return False
  try:
    decode(path)
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
    return False
  return True


def find_bad_files(paths: Iterable[str], num_workers: int = 2,
                   decode: Callable[[str], np.ndarray] | None = None) -> list[str]:
  """The paths, in order, that are missing or cannot be decoded, checked in parallel threads.

  Args:
    paths: image file paths.
    num_workers: threads checking files at once (Pillow releases the GIL while decoding).
    decode: if given, a file is bad when this raises (OSError, ValueError, ...) on it, so the
      check matches the pipeline exactly (e.g. `image_decoder(imshape)`); by default, when
      Pillow cannot open, verify and load it.
  """
  paths = [os.fspath(p) for p in paths]
  check = _is_readable if decode is None else functools.partial(_decodes, decode)
  with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
    readable = list(pool.map(check, paths))
  return [p for p, ok in zip(paths, readable) if not ok]
