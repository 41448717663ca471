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
                           process_id: int | None = None) -> None:
  """Joins JAX's distributed runtime; with no arguments, auto-detects a cluster or stays alone.

  On CPU the cross-process collectives go through gloo.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # affects CPU devices only
  if coordinator_address is not None or num_processes not in (None, 1):
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
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


def put_global(local: Any, sharding: NamedSharding) -> Any:
  """Each process's rows of a global batch -> global arrays split over the mesh."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)
