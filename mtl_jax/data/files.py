"""grain pipelines over image files: training batches in the sampler's order, padded eval batches.

Both yield this process's rows of each global batch (`mtl_jax.sharding.process_rows`), so each
process decodes only the images its devices need; `mtl_jax.sharding.put_global` assembles the
global batch. One grain element is one local batch: `num_workers` threads each decode a whole
batch (Pillow releases the GIL while it decodes and resizes), up to `max(prefetch,
num_workers)` batches ahead of the consumer. (One element per image costs ~50-100 us of Python
per image in grain and measured slower; grain's worker processes need absl flags parsed and
took seconds to start, slower here too.) Each batch is the dict of ARCHITECTURE.md:

    {"inputs": f32[B_local, H, W, C], "labels": {task: i32[B_local] | f32[B_local]}}

The training order is `sampler.indices(steps)`, a pure function of (seed, step): to resume at
step s, pass `steps=range(s, num_steps)` (see `mtl_jax.data.sampling`).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping, Sequence

import grain
from jax.sharding import Mesh
import numpy as np

from mtl_jax import sharding as sharding_lib
from mtl_jax.data.images import cached
from mtl_jax.data.sampling import Sampler

Decode = Callable[[str], np.ndarray]


def _local_rows(batch_size: int, mesh: Mesh | None) -> np.ndarray:
  """int[B_local]: `mtl_jax.sharding.process_rows` as indices (default mesh: all devices)."""
  mesh = sharding_lib.make_mesh() if mesh is None else mesh
  return np.arange(batch_size)[sharding_lib.process_rows(mesh, batch_size)]


def image_batches(paths: Sequence[str], labels: Mapping[str, np.ndarray], sampler: Sampler,
                  steps: Iterable[int], decode: Decode, *, mesh: Mesh | None = None,
                  num_workers: int = 2, prefetch: int = 2,
                  cache: bool = False) -> Iterator[dict]:
  """This process's rows of the global batch of each step in `steps`, in order.

  Args:
    paths: [N] image file paths of the training split.
    labels: {task: [N]} encoded labels (-1 / NaN missing), as `encode_frame` gives them.
    sampler: the data order; its `batch_size` is the global batch size.
    steps: the (finite) steps to load, e.g. `range(start_step, num_steps)`.
    decode: path -> f32[H, W, C], e.g. `image_decoder(imshape)`.
    mesh: the mesh the batch is split over (default: every device of every process).
    num_workers: decoding threads.
    prefetch: batches decoded ahead of the consumer.
    cache: keep every decoded image in memory for the life of this iterator, so later epochs
      skip decoding (for splits that fit; or pass `decode=images.cached(decode)` to share one
      cache between iterators).

  Yields:
    {"inputs": f32[B_local, H, W, C], "labels": {task: [B_local]}} per step.
  """
  paths, labels = _checked(paths, labels)
  rows = _local_rows(sampler.batch_size, mesh)
  steps = steps if isinstance(steps, Sequence) else list(steps)
  decode = cached(decode) if cache else decode

  def load(position: int) -> dict:
    return _batch(paths, labels, sampler.indices([steps[position]])[0, rows], decode)

  return _prefetched(grain.MapDataset.range(len(steps)).map(load), num_workers, prefetch)


def eval_image_batches(paths: Sequence[str], labels: Mapping[str, np.ndarray], batch_size: int,
                       decode: Decode, *, mesh: Mesh | None = None, num_workers: int = 2,
                       prefetch: int = 2, cache: bool = False) -> Iterator[dict]:
  """Every example once, in order, in fixed-size global batches padded at the end.

  Global batch k holds examples k * batch_size ... (k + 1) * batch_size - 1; rows past the
  last example are padding: zero images whose labels are all missing (-1 / NaN), so masked
  metrics ignore them. There are ceil(N / batch_size) batches; keep the first N rows of the
  gathered outputs (e.g. for predictions). Each process yields its rows of each batch.

  Args:
    paths: [N] image file paths.
    labels: {task: [N]} encoded labels; may be {} (e.g. for prediction).
    batch_size: the global batch size.
    decode: path -> f32[H, W, C].
    mesh, num_workers, prefetch, cache: as in `image_batches`.

  Yields:
    {"inputs": f32[B_local, H, W, C], "labels": {task: [B_local]}} per batch.
  """
  paths, labels = _checked(paths, labels)
  rows = _local_rows(batch_size, mesh)
  num_batches = -(-len(paths) // batch_size)
  decode = cached(decode) if cache else decode
  image_shape = decode(paths[0]).shape if len(paths) else ()  # for all-padding local rows

  def load(batch: int) -> dict:
    index = batch * batch_size + rows
    real = index[index < len(paths)]
    return _padded(_batch(paths, labels, real, decode), len(rows), image_shape)

  return _prefetched(grain.MapDataset.range(num_batches).map(load), num_workers, prefetch)


def _checked(paths: Sequence[str],
             labels: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  paths = np.asarray(paths, dtype=object)
  labels = {name: np.asarray(y) for name, y in labels.items()}
  for name, y in labels.items():
    if y.shape != paths.shape:
      raise ValueError(f"task {name!r} has {len(y)} labels for {len(paths)} files")
  return paths, labels


def _batch(paths: np.ndarray, labels: Mapping[str, np.ndarray], index: np.ndarray,
           decode: Decode) -> dict:
  """The batch of rows `index` (`inputs` is f32[0] when `index` is empty)."""
  images = [decode(p) for p in paths[index]]
  inputs = np.stack(images) if images else np.zeros((0,), np.float32)
  return {"inputs": inputs, "labels": {t: y[index] for t, y in labels.items()}}


def _padded(batch: dict, size: int, image_shape: tuple[int, ...]) -> dict:
  """`batch` with zero images and missing labels appended up to `size` rows."""
  num_real = len(batch["inputs"])
  if num_real == size:
    return batch
  inputs = np.zeros((size, *image_shape), np.float32)
  if num_real:
    inputs[:num_real] = batch["inputs"]
  labels = {t: np.concatenate([y, np.full(size - num_real, _missing_label(y.dtype), y.dtype)])
            for t, y in batch["labels"].items()}
  return {"inputs": inputs, "labels": labels}


def _missing_label(dtype: np.dtype):
  if np.issubdtype(dtype, np.integer):
    return -1
  if np.issubdtype(dtype, np.floating):
    return np.nan
  raise ValueError(f"labels of dtype {dtype} have no missing value; encode them first")


def _prefetched(batches: grain.MapDataset, num_workers: int, prefetch: int) -> Iterator[dict]:
  options = grain.ReadOptions(num_threads=num_workers,
                              prefetch_buffer_size=max(prefetch, num_workers, 1))
  return iter(batches.to_iter_dataset(options))
