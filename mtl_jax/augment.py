"""On-device image augmentation: pure JAX, jit-compatible, one random key per example.

    params = augment.resolve({"flip_left_right": True, "zoom_scale": 0.3})
    augment_batch = augment.make_augment(params)         # None when nothing is switched on
    images = augment_batch(key, images)                  # f32[B, H, W, C] -> f32[B, H, W, C]

`augment_batch` splits `key` into one key per example and vmaps the per-image augmentation, so
each example draws its own flips, zoom, colour shifts and noise, and a batch replays exactly
from the same key. Every shape is static and no Python branch reads a traced value, so it runs
inside the jit-compiled train step and on a batch sharded over devices.

Options keep the names of the seed library; a mapping switches on the options it names and
leaves the rest off; `True` means `DEFAULTS`, `False` or None none. They run in this order:

| option             | value                 | per image                                          |
| ------------------ | --------------------- | -------------------------------------------------- |
| `gaussian_blur`    | probability in [0, 1] | with this probability, blur with a 7x7 separable   |
|                    |                       | Gaussian, sigma uniform in `BLUR_SIGMA_RANGE` px   |
| `brightness_delta` | float d >= 0          | add a delta in [-d, d] (tf.image's                 |
|                    |                       | random_brightness)                                 |
| `contrast_delta`   | float d in [0, 1]     | scale the distance from each channel's mean by a   |
|                    |                       | factor in [1-d, 1+d] (random_contrast)             |
| `saturation_delta` | float d in [0, 1]     | scale the HSV saturation by a factor in [1-d, 1+d] |
|                    |                       | (random_saturation); RGB only                      |
| `hue_delta`        | float d in [0, 0.5]   | shift the HSV hue by [-d, d] turns (random_hue);   |
|                    |                       | RGB only                                           |
| `drop_color`       | probability in [0, 1] | with this probability, set every channel to the    |
|                    |                       | channel mean (grayscale, channel count kept)       |
| `flip_left_right`  | bool                  | reverse the columns with probability 1/2           |
| `flip_up_down`     | bool                  | reverse the rows with probability 1/2              |
| `rot90`            | bool                  | turn by 0/90/180/270 degrees (square images) or by |
|                    |                       | 0/180 degrees                                      |
|                    |                       | (non-square: a quarter turn changes the shape)     |
| `zoom_scale`       | float s in [0, 1)     | zoom by a factor in [1-s, 1+s] about the centre,   |
|                    |                       | bilinear; zooming out repeats the edge pixels      |
| `gaussian_noise`   | float std >= 0        | add white noise N(0, std^2) to every value         |

Flips, turn and zoom compose into one coordinate map, applied with one resample (exact, nearest
pixel, when there is no zoom).

Units: deltas and the noise std are in the units of the input, which the data pipeline
normalises to [0, 1] (`norm=255`). Brightness, contrast and noise can leave that range, so their
results are clipped to `value_range` (default (0, 1); None turns clipping off); the other options
keep values within the input's range by construction. Saturation and hue need three (RGB)
channels and leave images with any other channel count unchanged, so `augment=True` also works
on grayscale data. Every option draws from its own key, derived from the example's key by the
option's position in `OPTIONS`, so switching one option on or off does not change what the others
draw.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, Callable, Mapping

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np

Image = jnp.ndarray  # f32[H, W, C]
AugmentFn = Callable[[jax.Array, jnp.ndarray], jnp.ndarray]

BLUR_KERNEL_SIZE = 7
BLUR_SIGMA_RANGE = (0.5, 1.5)


@dataclasses.dataclass(frozen=True)
class Option:
  """One augmentation option: its value type and allowed range."""
  kind: type  # bool or float
  low: float = 0.0
  high: float = math.inf
  high_open: bool = False  # True: the value must be < high.

  def describe(self) -> str:
    if self.kind is bool:
      return "True or False"
    high = "inf" if math.isinf(self.high) else f"{self.high:g}"
    return f"a number in [{self.low:g}, {high}{')' if self.high_open else ']'}"


# In the order the options are applied.
OPTIONS: dict[str, Option] = {
    "gaussian_blur": Option(float, 0.0, 1.0),
    "brightness_delta": Option(float),
    "contrast_delta": Option(float, 0.0, 1.0),
    "saturation_delta": Option(float, 0.0, 1.0),
    "hue_delta": Option(float, 0.0, 0.5),
    "drop_color": Option(float, 0.0, 1.0),
    "flip_left_right": Option(bool),
    "flip_up_down": Option(bool),
    "rot90": Option(bool),
    "zoom_scale": Option(float, 0.0, 1.0, high_open=True),
    "gaussian_noise": Option(float),
}

# `augment=True`: the seed library's defaults for the options it shares with us; its
# `gaussian_noise` was a probability of adding noise of std 0.1, here it is the std itself.
DEFAULTS: dict[str, Any] = {
    "gaussian_blur": 0.2,
    "brightness_delta": 0.2,
    "contrast_delta": 0.1,
    "saturation_delta": 0.1,
    "hue_delta": 0.05,
    "drop_color": 0.2,
    "flip_left_right": True,
    "flip_up_down": True,
    "rot90": True,
    "zoom_scale": 0.2,
    "gaussian_noise": 0.02,
}


# ----------------------------------------------------------------------------------------------
# Configuration.


def _validated(name: str, value: Any) -> bool | float:
  """`value` as the option's Python type; ValueError naming `name` if it does not fit."""
  option = OPTIONS[name]
  problem = f"augment option {name!r} must be {option.describe()}, got {value!r}"
  if option.kind is bool:
    if not isinstance(value, (bool, np.bool_)):
      raise ValueError(problem)
    return bool(value)
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(problem)
  value = float(value)
  too_high = value >= option.high if option.high_open else value > option.high
  if not math.isfinite(value) or value < option.low or too_high:
    raise ValueError(problem)
  return value


def resolve(augment: bool | Mapping[str, Any] | None) -> dict[str, Any]:
  """The augmentation options that `augment` asks for, validated.

  Args:
    augment: True for `DEFAULTS`, False or None for no augmentation, or a mapping (or
      `ConfigDict`) from option names (keys of `OPTIONS`) to values; options it leaves out
      stay off.

  Returns:
    A new dict of option name -> bool or float, only the options given.

  Raises:
    ValueError: an unknown option (the message lists the known ones), or a value of the wrong
      type or out of range (the message names the option).
  """
  if augment is None or augment is False:
    return {}
  if augment is True:
    return dict(DEFAULTS)
  if not isinstance(augment, Mapping) and not hasattr(augment, "items"):
    raise ValueError(f"augment must be True, False, None or a dict of options, got {augment!r}")
  augment = dict(augment.items())  # also an ml_collections.ConfigDict, which is no Mapping
  unknown = sorted(set(augment) - set(OPTIONS))
  if unknown:
    raise ValueError(f"unknown augment option(s) {unknown}; known: {list(OPTIONS)}")
  return {name: _validated(name, value) for name, value in augment.items()}


def _is_active(value: bool | float) -> bool:
  return value is True or (not isinstance(value, bool) and value > 0)


# ----------------------------------------------------------------------------------------------
# Deterministic image operations: f32[H, W, C] in, same shape out.
#
# Flips, quarter turns and zooms act on pixel coordinates about the image centre c: the output
# pixel p takes the input's value at c + M (p - c), for a 2x2 matrix M. Applied one after the
# other they compose into one M, so all of them cost one resample.


def geometry_matrix(flip_rows: jnp.ndarray | float, flip_cols: jnp.ndarray | float,
                    quarter_turns: jnp.ndarray | int, zoom_factor: jnp.ndarray | float
                    ) -> jnp.ndarray:
  """f32[2, 2]: the coordinate map (see `resample`) of flips, then a turn, then a zoom.

  Args:
    flip_rows: -1 to reverse the rows (flip up-down), 1 not to.
    flip_cols: -1 to reverse the columns (flip left-right), 1 not to.
    quarter_turns: 0..3, turns by 90 degrees as `jnp.rot90(image, quarter_turns)`.
    zoom_factor: magnification about the centre.
  """
  odd = quarter_turns % 2
  cos, sin = (1 - odd) * (1 - quarter_turns), odd * (2 - quarter_turns)  # of the turn angle
  rows = jnp.stack([flip_rows * cos, flip_rows * sin])
  cols = jnp.stack([-flip_cols * sin, flip_cols * cos])
  return jnp.stack([rows, cols]).astype(jnp.float32) / zoom_factor


def resample(image: Image, matrix: jnp.ndarray, bilinear: bool = True) -> Image:
  """`image` sampled at c + matrix @ (p - c) for each pixel p; c the centre, edges repeated.

  Args:
    image: f32[H, W, C].
    matrix: f32[2, 2] acting on (row, column) offsets from the centre.
    bilinear: bilinear interpolation; False takes the nearest pixel, which is exact and
      cheaper when `matrix` only flips and turns.
  """
  height, width, channels = image.shape
  center_row, center_col = (height - 1) / 2, (width - 1) / 2
  y, x = jnp.meshgrid(jnp.arange(height) - center_row, jnp.arange(width) - center_col,
                      indexing="ij")
  rows = jnp.clip(center_row + matrix[0, 0] * y + matrix[0, 1] * x, 0, height - 1)
  cols = jnp.clip(center_col + matrix[1, 0] * y + matrix[1, 1] * x, 0, width - 1)
  pixels = image.reshape(height * width, channels)
  at = lambda r, c: pixels.at[r * width + c].get(mode="promise_in_bounds")
  if not bilinear:
    return at(jnp.round(rows).astype(jnp.int32), jnp.round(cols).astype(jnp.int32))
  top, left = jnp.floor(rows), jnp.floor(cols)
  down, right = (rows - top)[..., None], (cols - left)[..., None]
  top, left = top.astype(jnp.int32), left.astype(jnp.int32)
  bottom, far = jnp.minimum(top + 1, height - 1), jnp.minimum(left + 1, width - 1)
  upper = (1 - right) * at(top, left) + right * at(top, far)
  lower = (1 - right) * at(bottom, left) + right * at(bottom, far)
  return (1 - down) * upper + down * lower


def zoom(image: Image, factor: jnp.ndarray) -> Image:
  """`image` magnified by `factor` about its centre, same shape, bilinear, edge-repeating."""
  return resample(image, geometry_matrix(1.0, 1.0, 0, factor))


def gaussian_kernel(sigma: jnp.ndarray, size: int = BLUR_KERNEL_SIZE) -> jnp.ndarray:
  """f32[size]: a normalised 1-D Gaussian of standard deviation `sigma` pixels."""
  offsets = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
  weights = jnp.exp(-0.5 * jnp.square(offsets / sigma))
  return weights / weights.sum()


def _convolve_axis(image: Image, kernel: jnp.ndarray, axis: int) -> Image:
  """`image` convolved with the odd-length `kernel` along `axis`, edges repeated."""
  size, length = kernel.shape[0], image.shape[axis]
  pad = [(0, 0)] * image.ndim
  pad[axis] = (size // 2, size // 2)
  padded = jnp.pad(image, pad, mode="edge")
  return sum(kernel[k] * lax.slice_in_dim(padded, k, k + length, axis=axis) for k in range(size))


def gaussian_blur(image: Image, sigma: jnp.ndarray) -> Image:
  """`image` blurred by a separable `BLUR_KERNEL_SIZE`-tap Gaussian, edges repeated."""
  kernel = gaussian_kernel(sigma)
  return _convolve_axis(_convolve_axis(image, kernel, axis=0), kernel, axis=1)


def adjust_contrast(image: Image, factor: jnp.ndarray) -> Image:
  """Each channel's distance from its spatial mean scaled by `factor` (tf.image)."""
  mean = image.mean(axis=(0, 1), keepdims=True)
  return (image - mean) * factor + mean


def _wrap(x: jnp.ndarray, period: float) -> jnp.ndarray:
  """`x` modulo `period`, in [0, period); cheaper than jnp.mod, which also fixes signs."""
  return x - period * jnp.floor(x / period)


def rgb_to_hsv(rgb: jnp.ndarray) -> jnp.ndarray:
  """f32[..., 3] RGB (non-negative) -> HSV, hue in turns [0, 1), saturation in [0, 1]."""
  red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  # Elementwise rather than reductions over the 3-long channel axis: several times faster on CPU.
  value = jnp.maximum(red, jnp.maximum(green, blue))
  chroma = value - jnp.minimum(red, jnp.minimum(green, blue))
  safe_chroma = jnp.where(chroma > 0, chroma, 1.0)
  saturation = jnp.where(value > 0, chroma / jnp.where(value > 0, value, 1.0), 0.0)
  hue_sixths = jnp.where(value == red, _wrap((green - blue) / safe_chroma, 6.0),
                         jnp.where(value == green, (blue - red) / safe_chroma + 2.0,
                                   (red - green) / safe_chroma + 4.0))
  hue = jnp.where(chroma > 0, hue_sixths / 6.0, 0.0)
  return jnp.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(hsv: jnp.ndarray) -> jnp.ndarray:
  """f32[..., 3] HSV (hue in turns) -> RGB; the inverse of `rgb_to_hsv`."""
  hue, saturation, value = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
  # Channel n (red 5, green 3, blue 1) falls off from the value where the hue is far from it.
  k = [_wrap(n + hue * 6.0, 6.0) for n in (5.0, 3.0, 1.0)]
  falloff = jnp.concatenate([jnp.clip(jnp.minimum(kn, 4.0 - kn), 0.0, 1.0) for kn in k], -1)
  return value - value * saturation * falloff


def adjust_saturation_and_hue(image: Image, saturation_factor: jnp.ndarray,
                              hue_shift: jnp.ndarray) -> Image:
  """RGB `image` with saturation scaled (clipped to [0, 1]) and hue shifted by turns."""
  hsv = rgb_to_hsv(image)
  hue = _wrap(hsv[..., 0] + hue_shift, 1.0)
  saturation = jnp.clip(hsv[..., 1] * saturation_factor, 0.0, 1.0)
  return hsv_to_rgb(jnp.stack([hue, saturation, hsv[..., 2]], axis=-1))


def drop_color(image: Image) -> Image:
  """Every channel replaced by the pixel's channel mean; the channel count is kept."""
  channels = image.shape[-1]
  mean = sum(image[..., c:c + 1] for c in range(channels)) / channels  # faster than .mean(-1)
  return jnp.broadcast_to(mean, image.shape)


# ----------------------------------------------------------------------------------------------
# Random augmentation of one image, then of a batch.


def _symmetric(key: jax.Array, delta: float) -> jnp.ndarray:
  return jax.random.uniform(key, (), jnp.float32, -delta, delta)


def _random_geometry(keys: Mapping[str, jax.Array], active: Mapping[str, Any],
                     shape: tuple[int, ...]) -> jnp.ndarray:
  """f32[2, 2]: the coordinate map of this image's random flips, turn and zoom."""
  def sign(name: str) -> jnp.ndarray | float:
    return jnp.where(jax.random.bernoulli(keys[name]), -1.0, 1.0) if name in active else 1.0

  turns = 0
  if "rot90" in active:
    square = shape[0] == shape[1]  # otherwise only half turns keep the shape
    turns = (jax.random.randint(keys["rot90"], (), 0, 4) if square
             else 2 * jax.random.bernoulli(keys["rot90"]).astype(jnp.int32))
  zoom_factor = 1.0
  if "zoom_scale" in active:
    scale = active["zoom_scale"]
    zoom_factor = jax.random.uniform(keys["zoom_scale"], (), jnp.float32, 1.0 - scale,
                                     1.0 + scale)
  return geometry_matrix(sign("flip_up_down"), sign("flip_left_right"), turns, zoom_factor)


Keys = Mapping[str, jax.Array]  # one PRNG key per option name
Active = Mapping[str, Any]  # the switched-on options and their values
Clip = Callable[[Image], Image]


def _geometry_stage(keys: Keys, active: Active, image: Image, clip: Clip) -> Image:
  del clip  # interpolation stays within the input's range
  if not {"flip_left_right", "flip_up_down", "rot90", "zoom_scale"} & set(active):
    return image
  return resample(image, _random_geometry(keys, active, image.shape),
                  bilinear="zoom_scale" in active)


def _blur_stage(keys: Keys, active: Active, image: Image, clip: Clip) -> Image:
  del clip  # a normalised kernel stays within the input's range
  if "gaussian_blur" not in active:
    return image
  apply_key, sigma_key = jax.random.split(keys["gaussian_blur"])
  sigma = jax.random.uniform(sigma_key, (), jnp.float32, *BLUR_SIGMA_RANGE)
  return jnp.where(jax.random.bernoulli(apply_key, active["gaussian_blur"]),
                   gaussian_blur(image, sigma), image)


def _brightness_contrast_stage(keys: Keys, active: Active, image: Image, clip: Clip) -> Image:
  if "brightness_delta" in active:
    image = clip(image + _symmetric(keys["brightness_delta"], active["brightness_delta"]))
  if "contrast_delta" in active:
    factor = 1.0 + _symmetric(keys["contrast_delta"], active["contrast_delta"])
    image = clip(adjust_contrast(image, factor))
  return image


def _saturation_hue_stage(keys: Keys, active: Active, image: Image, clip: Clip) -> Image:
  del clip  # HSV saturation is clipped to [0, 1] and the value kept
  if image.shape[-1] != 3 or not {"saturation_delta", "hue_delta"} & set(active):
    return image
  factor = 1.0 + _symmetric(keys["saturation_delta"], active.get("saturation_delta", 0.0))
  shift = _symmetric(keys["hue_delta"], active.get("hue_delta", 0.0))
  return adjust_saturation_and_hue(image, factor, shift)


def _drop_color_stage(keys: Keys, active: Active, image: Image, clip: Clip) -> Image:
  del clip  # a mean stays within the input's range
  if "drop_color" not in active:
    return image
  return jnp.where(jax.random.bernoulli(keys["drop_color"], active["drop_color"]),
                   drop_color(image), image)


def _noise_stage(keys: Keys, active: Active, image: Image, clip: Clip) -> Image:
  if "gaussian_noise" not in active:
    return image
  # Each example's noise comes from its own key under vmap, so the batch axis stays shardable
  # without the partitionable threefry, which is 4x slower here on CPU.
  with jax.threefry_partitionable(False):
    noise = jax.random.normal(keys["gaussian_noise"], image.shape, jnp.float32)
  return clip(image + active["gaussian_noise"] * noise)


# Colour first and geometry after it (the noise last, so that it is not interpolated): on CPU
# this order lets XLA fuse the stages with the least recomputation.
STAGES = (_blur_stage, _brightness_contrast_stage, _saturation_hue_stage, _drop_color_stage,
          _geometry_stage, _noise_stage)


def augment_image(params: Mapping[str, Any], key: jax.Array, image: Image,
                  value_range: tuple[float, float] | None = (0.0, 1.0)) -> Image:
  """One image augmented by the active options of `params` (see the module docstring).

  Args:
    params: validated options, as returned by `resolve`.
    key: this image's PRNG key.
    image: f32[H, W, C].
    value_range: (low, high) to clip brightness, contrast and noise to, or None.

  Returns:
    The augmented image, same shape and dtype.
  """
  keys = dict(zip(OPTIONS, jax.random.split(key, len(OPTIONS))))
  active = {name: value for name, value in params.items() if _is_active(value)}
  clip = (lambda x: x) if value_range is None else (lambda x: jnp.clip(x, *value_range))
  dtype, image = image.dtype, image.astype(jnp.float32)
  for stage in STAGES:
    image = stage(keys, active, image, clip)
  return image.astype(dtype)


def _sharded_like(keys: jax.Array, images: jnp.ndarray) -> jax.Array:
  """`keys` sharded over the mesh axis of `images`' batch axis, when that axis is explicit.

  vmap needs both mapped arguments sharded alike under explicit sharding
  (`jax.make_mesh`'s default); under automatic sharding (`jax.sharding.Mesh`) nothing changes.
  """
  sharding = jax.typeof(images).sharding
  batch_axis = sharding.spec[0] if sharding.spec else None
  if batch_axis is None:
    return keys
  return jax.sharding.reshard(keys, NamedSharding(sharding.mesh, PartitionSpec(batch_axis)))


def make_augment(params: Mapping[str, Any],
                 value_range: tuple[float, float] | None = (0.0, 1.0)) -> AugmentFn | None:
  """A pure batch augmentation for `params`, or None when no option is switched on.

  Args:
    params: options as accepted by `resolve` (validated again here).
    value_range: (low, high) of the input values, to clip brightness, contrast and noise to;
      None turns clipping off. The data pipeline's default `norm=255` gives (0, 1).

  Returns:
    `augment_batch(key, images f32[B, H, W, C]) -> f32[B, H, W, C]`, jit-compiled: splits `key`
    into B keys and augments example i with key i; deterministic given `key`, and callable
    inside another jit-compiled function on a batch sharded over its leading axis. Equal
    arguments return the same function, so repeated calls compile once.
  """
  active = tuple(sorted((name, value) for name, value in resolve(params).items()
                        if _is_active(value)))
  if not active:
    return None
  value_range = None if value_range is None else tuple(float(v) for v in value_range)
  return _compiled_augment(active, value_range)


@functools.cache
def _compiled_augment(params: tuple[tuple[str, Any], ...],
                      value_range: tuple[float, float] | None) -> AugmentFn:
  """The jit-compiled batch augmentation, one per distinct (params, value_range)."""
  one = functools.partial(augment_image, dict(params), value_range=value_range)

  def augment_batch(key: jax.Array, images: jnp.ndarray) -> jnp.ndarray:
    keys = _sharded_like(jax.random.split(key, images.shape[0]), images)
    return jax.vmap(one)(keys, images)

  return jax.jit(augment_batch)
