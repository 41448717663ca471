"""Data order and host-side batch pipelines.

The order of training examples is a pure function of (seed, step): `Sampler.indices` gives the
global batch of any step without replaying the ones before it, so a resumed run draws exactly
the batches the interrupted one would have, and no iterator state needs checkpointing (see
`mtl_jax.data.sampling`). Each process then loads only its rows of every global batch
(`mtl_jax.sharding.process_rows`).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import grain
from jax.sharding import Mesh

from mtl_jax import sharding as sharding_lib
from mtl_jax.data.arrays import Split
from mtl_jax.data.sampling import Sampler  # re-exported: its home was this module


def host_batches(split: Split, sampler: Sampler, chunks: Sequence[tuple[int, int]], *,
                 mesh: Mesh | None = None, num_threads: int = 2,
                 prefetch: int = 2) -> Iterator[dict]:
  """A grain pipeline yielding, per chunk (first step, length), this process's stacked batches.

  Every leaf has shape [length, local batch, ...]; one element feeds one `lax.scan` dispatch
  over `mesh` (default: every device of every process).
  """
  mesh = sharding_lib.make_mesh() if mesh is None else mesh
  rows = sharding_lib.process_rows(mesh, sampler.batch_size)

  def load(chunk):
    first, length = chunk
    index = sampler.indices(range(first, first + length))[:, rows]
    return split.batch(index)

  ds = grain.MapDataset.source(list(chunks)).map(load)
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(ds.to_iter_dataset(options))
