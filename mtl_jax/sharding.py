"""The device mesh, shardings, global batches, and multi-process initialisation.

Data parallel: the global batch is split on its batch axis over the mesh axis "data", which
spans every device of every process; parameters and optimizer state are replicated.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, *, timeout_s: int = 300) -> None:
  """Joins JAX's distributed runtime; with no arguments, auto-detects a cluster or stays alone.

  On CPU the cross-process collectives go through gloo. `timeout_s`: how long to wait for
  every process to join (jax.distributed.initialize's initialization_timeout; the runtime
  aborts the process when it passes, so `mtl_jax.peers.roll_call` checks first).
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # affects CPU devices only
  if coordinator_address is not None or num_processes not in (None, 1):
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s)
    return
  try:  # Auto-detection on SLURM, TPU pods, MPI, ...; alone otherwise.
    jax.distributed.initialize()
  except (ValueError, RuntimeError):
    pass


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process), axis "data"."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Splits axis `batch_axis` over "data": 0 for one batch, 1 for a stack of K batches."""
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def process_rows(mesh: Mesh, global_batch_size: int) -> slice | np.ndarray:
  """The rows of a global batch that this process's devices hold, in ascending order.

  `put_global` expects each process's rows in exactly this order. They are read off the
  sharding rather than assumed to be block `process_index`: a mesh need not place a process's
  devices side by side (on TPU pods it often does not). A slice when contiguous (the usual
  case, so indexing with it gives a view), else an index array.
  """
  index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
  rows = sorted({r for (part,) in index_map.values()
                 for r in range(*part.indices(global_batch_size))})
  if rows == list(range(rows[0], rows[-1] + 1)):
    return slice(rows[0], rows[-1] + 1)
  return np.asarray(rows)


def put_global(local: Any, sharding: NamedSharding) -> Any:
  """Each process's rows of a global batch (`process_rows`) -> global arrays over the mesh."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


def any_process(flag: bool) -> bool:
  """Whether `flag` is set on any process.

  For decisions every process must take at the same step, such as stopping on SIGTERM: a
  signal reaches each process at its own moment, and a process that stops alone leaves the
  others waiting in a collective for ever.
  """
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))
