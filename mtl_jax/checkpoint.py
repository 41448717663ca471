"""Orbax checkpoints of the full train state plus run metadata (tasks and config).

The data order is a function of (seed, step) (`mtl_jax.data.Sampler`), so the step stored in
the train state is the whole data-iterator state. Writes are atomic (orbax finalises a step
directory only once it is complete), so a run killed at any moment leaves the last finished
checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from mtl_jax.errors import ConfigError


class Checkpointer:
  """Keeps the last `keep` train states in `<workdir>/<subdir>` (`checkpoints`)."""

  def __init__(self, workdir: str, keep: int, subdir: str = "checkpoints"):
    self.directory = os.path.join(os.path.abspath(workdir), subdir)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, run: dict) -> None:
    """Saves `state` and the JSON `run` metadata as step `step` (asynchronously)."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(run)), force=True)

  def restore(self, like: Any, run: dict) -> Any | None:
    """The latest saved state shaped and sharded like `like`, or None if there is none.

    Raises ConfigError if the checkpoint was written for other tasks than `run["tasks"]`.
    """
    step = self._manager.latest_step()
    if step is None:
      return None
    saved_run = self._manager.restore(
        step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))["run"]
    if saved_run.get("tasks") != run["tasks"]:
      names = lambda r: [t["name"] for t in r.get("tasks", [])]
      raise ConfigError(
          f"the checkpoint in {self.directory} was written for tasks {names(saved_run)}, not "
          f"{names(run)}; use another --workdir to start a new run")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))
    except (ValueError, KeyError) as e:
      raise ConfigError(f"the checkpoint at step {step} in {self.directory} does not fit this "
                        f"model and optimizer ({type(e).__name__}); use another --workdir "
                        "to start a new run") from None
    return restored["state"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
