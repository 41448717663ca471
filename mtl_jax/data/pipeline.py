"""Data order and host-side batch pipelines.

The order of training examples is a pure function of (seed, step): `Sampler.indices` gives the
global batch of any step without replaying the ones before it, so a resumed run draws exactly
the batches the interrupted one would have, and no iterator state needs checkpointing. Each
process then loads only its rows of every global batch (`process_rows`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, Sequence

import grain
from jax.sharding import Mesh
import numpy as np

from mtl_jax import sharding as sharding_lib
from mtl_jax.data.arrays import Split


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, num_examples: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


@dataclasses.dataclass(frozen=True)
class Sampler:
  """Shuffled global batches: a fresh permutation each epoch, the last partial batch dropped."""
  num_examples: int
  batch_size: int
  seed: int

  def __post_init__(self):
    if self.num_examples < self.batch_size:
      raise ValueError(f"{self.num_examples} training examples cannot fill one batch of "
                       f"{self.batch_size}")

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.batch_size

  def indices(self, steps: Sequence[int]) -> np.ndarray:
    """int32[len(steps), batch_size]: the example indices of each step's global batch."""
    out = np.empty((len(steps), self.batch_size), np.int32)
    for i, step in enumerate(steps):
      epoch, k = divmod(int(step), self.steps_per_epoch)
      perm = _epoch_permutation(self.seed, self.num_examples, epoch)
      out[i] = perm[k * self.batch_size:(k + 1) * self.batch_size]
    return out


def process_rows(global_batch_size: int, mesh: Mesh | None = None) -> slice | np.ndarray:
  """The rows of a global batch that this process loads and feeds to its local devices.

  `mesh` is the mesh the batch is split over (default: every device of every process).
  """
  mesh = sharding_lib.make_mesh() if mesh is None else mesh
  return sharding_lib.process_rows(mesh, global_batch_size)


def host_batches(split: Split, sampler: Sampler, chunks: Sequence[tuple[int, int]], *,
                 mesh: Mesh | None = None, num_threads: int = 2,
                 prefetch: int = 2) -> Iterator[dict]:
  """A grain pipeline yielding, per chunk (first step, length), this process's stacked batches.

  Every leaf has shape [length, local batch, ...]; one element feeds one `lax.scan` dispatch
  over `mesh` (default: every device of every process).
  """
  rows = process_rows(sampler.batch_size, mesh)

  def load(chunk):
    first, length = chunk
    index = sampler.indices(range(first, first + length))[:, rows]
    return split.batch(index)

  ds = grain.MapDataset.source(list(chunks)).map(load)
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(ds.to_iter_dataset(options))
