"""What the training loop reads: in-memory splits (`ArrayData`) or host batches (`StreamData`),
and padded evaluation batches of a split.

`mtl_jax.train` turns each into dispatches: `ArrayData` runs K steps per jit call in one
`lax.scan`, `StreamData` one jitted step per host batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Sequence

import jax
from jax.sharding import Mesh
import numpy as np

from mtl_jax import sharding as sharding_lib
from mtl_jax.data.arrays import Split
from mtl_jax.data.pipeline import host_batches
from mtl_jax.data.sampling import Sampler
from mtl_jax.tasks import Task


@dataclasses.dataclass(frozen=True)
class ArrayData:
  """An in-memory split, K steps per dispatch.

  `on_device`: the whole split sits on the devices and each step gathers its batch by index;
  otherwise a grain pipeline stacks each process's rows of the K batches on the host. `val`:
  the validation split, which a weighting method with `val_batch` draws batches from (it is
  then put whole on every device).
  """
  split: Split
  sampler: Sampler
  on_device: bool
  val: Split | None = None

  @property
  def steps_per_epoch(self) -> int:
    return self.sampler.steps_per_epoch

  def example_inputs(self) -> np.ndarray:
    """One input f32[1, ...], for the model's shapes."""
    return self.split.inputs[:1]

  def chunk_inputs(self, chunks: Sequence[tuple[int, int]],
                   mesh: Mesh) -> Iterator[tuple[Any, Any]]:
    """(source, xs) per (first step, length) chunk: the split on the devices and i32[K, B]
    batch indices, or None and the stacked global batches [K, B, ...]."""
    if self.on_device:
      source = on_devices(self.split, mesh)
      index_sharding = sharding_lib.batch_sharding(mesh, 1)
      for first, length in chunks:
        yield source, jax.device_put(self.sampler.indices(range(first, first + length)),
                                     index_sharding)
    else:
      sharding = sharding_lib.batch_sharding(mesh, 1)
      for local in host_batches(self.split, self.sampler, chunks, mesh=mesh):
        yield None, sharding_lib.put_global(local, sharding)


def on_devices(split: Split, mesh: Mesh) -> dict:
  """The whole split as one batch {"inputs", "labels"}, replicated on every device of `mesh`
  (the on-device training source; the validation split of look-ahead methods)."""
  return jax.device_put(split.batch(np.arange(len(split))), sharding_lib.replicated(mesh))


@dataclasses.dataclass(frozen=True)
class StreamData:
  """Host batches (e.g. decoded image files), one jitted step per batch.

  Attributes:
    batches: steps -> an iterator over this process's rows of each step's global batch, in
      order (a pure function of the step, so a resumed run gets the same batches).
    example: one input f32[1, ...].
    steps_per_epoch: global batches per epoch.
  """
  batches: Callable[[Sequence[int]], Iterator[dict]]
  example: np.ndarray
  steps_per_epoch: int

  def example_inputs(self) -> np.ndarray:
    return self.example


def pad_split(split: Split, tasks: Sequence[Task], multiple: int) -> Split:
  """`split` padded to a multiple of `multiple` rows whose labels are all missing."""
  pad = -len(split) % multiple
  if not pad:
    return split
  inputs = np.concatenate([split.inputs, np.zeros((pad, *split.inputs.shape[1:]),
                                                  split.inputs.dtype)])
  labels = {}
  for task in tasks:
    y = split.labels[task.name]
    labels[task.name] = np.concatenate([y, np.full((pad, *y.shape[1:]), task.missing_value,
                                                   y.dtype)])
  return Split(inputs, labels)


def split_batches(split: Split, tasks: Sequence[Task], batch_size: int,
                  mesh: Mesh) -> Iterator[dict]:
  """This process's rows of each global batch of `split`, the last one padded (labels missing)."""
  padded = pad_split(split, tasks, batch_size)
  rows = sharding_lib.process_rows(mesh, batch_size)
  for start in range(0, len(padded), batch_size):
    yield padded.batch(np.arange(start, start + batch_size)[rows])
