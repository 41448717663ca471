"""Orbax checkpoints of the full train state plus run metadata (tasks and config).

The data order is a function of (seed, step) (`mtl_jax.data.Sampler`), so the step stored in
the train state is the whole data-iterator state. Writes are atomic (orbax finalises a step
directory only once it is complete), so a run killed at any moment leaves the last finished
checkpoint intact.

Damage after the fact is survived too. Orbax (0.12) keeps no checksum of what it wrote, so each
finished step directory gets `checksums.json`, the SHA-256 of each of its files. A restore tries
the newest checkpoint first and falls back to older ones: a checkpoint whose files are missing
or differ from their checksums (same-size corruption included), that orbax cannot read, or that
holds non-finite values is skipped with a warning saying why, and moved to
`<workdir>/skipped_checkpoints/` so that the resumed run can save that step again. Older step
directories left half-deleted (a kill while orbax deleted them) are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from mtl_jax import atomic
from mtl_jax import guard
from mtl_jax.errors import ConfigError

CHECKSUM_FILE = "checksums.json"
SKIPPED_DIR = "skipped_checkpoints"
_ORBAX_METADATA = "_CHECKPOINT_METADATA"  # written last by orbax's finalisation


class DamagedCheckpoint(Exception):
  """A checkpoint that cannot be restored as saved; the message says why."""


def file_checksums(directory: str) -> dict[str, str]:
  """{path relative to `directory`: SHA-256 hex digest} of every file under it but ours."""
  sums = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, directory)
      if relative != CHECKSUM_FILE:
        with open(path, "rb") as f:
          sums[relative] = hashlib.file_digest(f, "sha256").hexdigest()
  return sums


def _saved_checksums(directory: str) -> dict[str, str] | None:
  try:
    with open(os.path.join(directory, CHECKSUM_FILE), encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise DamagedCheckpoint(f"{CHECKSUM_FILE} cannot be read ({type(e).__name__})") from None


def missing_files(directory: str) -> list[str]:
  """The files of a step directory that its checksums (or orbax's metadata) say it should have
  and it lacks: cheap, sizes and contents unread."""
  try:
    expected = _saved_checksums(directory)
  except DamagedCheckpoint:
    expected = None
  expected = [_ORBAX_METADATA] if expected is None else list(expected)
  return sorted(f for f in expected if not os.path.isfile(os.path.join(directory, f)))


def verify(directory: str) -> bool:
  """Raises DamagedCheckpoint if a file of the step `directory` is missing or differs from its
  checksum; True if checked, False if it has no checksums (written before they existed, or
  killed between orbax's finalisation and ours)."""
  expected = _saved_checksums(directory)
  if expected is None:
    return False
  actual = file_checksums(directory)
  missing = sorted(set(expected) - set(actual))
  if missing:
    raise DamagedCheckpoint(f"{len(missing)} file(s) missing: {', '.join(missing)}")
  changed = sorted(f for f in expected if expected[f] != actual[f])
  if changed:
    raise DamagedCheckpoint(f"{len(changed)} file(s) differ from their checksums: "
                            f"{', '.join(changed)}")
  return True


def _listdir(directory: str) -> list[str]:
  return os.listdir(directory) if os.path.isdir(directory) else []


def _sync_processes(name: str) -> None:
  """Waits for every process (after process 0 changed the checkpoint directory)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


class Checkpointer:
  """Keeps the last `keep` train states in `<workdir>/<subdir>` (`checkpoints`)."""

  def __init__(self, workdir: str, keep: int, subdir: str = "checkpoints"):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, subdir)
    self._is_lead = jax.process_index() == 0
    self._unsummed: list[int] = []  # saved steps whose checksums are not written yet
    self._remove_half_deleted()
    self._manager = self._open(keep)

  def _open(self, keep: int) -> ocp.CheckpointManager:
    self._keep = keep
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             cleanup_tmp_directories=True))

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, run: dict) -> None:
    """Saves `state` and the JSON `run` metadata as step `step` (asynchronously)."""
    self.wait()  # orbax waits for the previous save too; then its checksums are written
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), run=ocp.args.JsonSave(run)), force=True)
    self._unsummed.append(step)

  def restore(self, like: Any, run: dict) -> Any | None:
    """The newest saved state that restores, shaped and sharded like `like`; None if none.

    Damaged checkpoints are skipped, newest first, each with a warning saying why (see the
    module docstring).

    Raises:
      ConfigError: a checkpoint was written for other tasks than `run["tasks"]`, or none of
        the checkpoints restores (each reason given).
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    skipped = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state = self._restore_step(step, abstract, run)
      except DamagedCheckpoint as e:
        logging.warning("skipping the checkpoint of step %d in %s: %s", step, self.directory, e)
        skipped.append((step, str(e)))
        continue
      self._set_aside([s for s, _ in skipped])
      return state
    if skipped:
      reasons = "; ".join(f"step {s}: {why}" for s, why in skipped)
      raise ConfigError(f"no checkpoint in {self.directory} restores ({reasons}); use another "
                        "--workdir to start a new run")
    return None

  def _restore_step(self, step: int, abstract: Any, run: dict) -> Any:
    directory = self._step_dir(step)
    checked = verify(directory)
    try:
      saved_run = self._manager.restore(
          step, args=ocp.args.Composite(run=ocp.args.JsonRestore()))["run"]
    except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
      raise DamagedCheckpoint(f"its run metadata cannot be read ({type(e).__name__})") from None
    if not isinstance(saved_run, dict):
      raise DamagedCheckpoint("its run metadata is not a JSON object")
    if saved_run.get("tasks") != run["tasks"]:
      names = lambda r: [t["name"] for t in r.get("tasks", [])]
      raise ConfigError(
          f"the checkpoint in {self.directory} was written for tasks {names(saved_run)}, not "
          f"{names(run)}; use another --workdir to start a new run")
    try:
      state = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))["state"]
    except (ValueError, KeyError) as e:
      if checked:  # the files are as written: the model or optimizer must have changed
        raise ConfigError(
            f"the checkpoint at step {step} in {self.directory} does not fit this model and "
            f"optimizer ({type(e).__name__}); use another --workdir to start a new run"
        ) from None
      raise DamagedCheckpoint(f"orbax cannot restore it ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    except Exception as e:  # pylint: disable=broad-except  (truncated files, ...)
      raise DamagedCheckpoint(f"orbax cannot restore it ({type(e).__name__})") from None
    bad = [p for p, ok in zip(guard.PARTS, np.asarray(guard.finite_parts(state))) if not ok]
    if bad:
      raise DamagedCheckpoint(f"its {', '.join(bad)} hold non-finite values")
    return state

  def _set_aside(self, steps: list[int]) -> None:
    """Moves the skipped step directories out of orbax's sight, so those steps can be saved
    again by the resumed run (kept for inspection)."""
    if not steps:
      return
    if self._is_lead:
      aside = os.path.join(self.workdir, SKIPPED_DIR)
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        target = os.path.join(aside, str(step))
        if os.path.exists(target):
          shutil.rmtree(target)
        os.replace(self._step_dir(step), target)
        logging.warning("moved the damaged checkpoint of step %d to %s", step, target)
    self._reopen()

  def _remove_half_deleted(self) -> None:
    """Removes step directories older than the newest that lack files: orbax deletes the
    oldest first, and a kill during a deletion leaves one behind (the newest, if damaged, is
    `restore`'s to skip)."""
    steps = sorted(int(d) for d in _listdir(self.directory) if d.isdigit())
    for step in steps[:-1]:
      missing = missing_files(self._step_dir(step))
      if missing:
        if self._is_lead:
          shutil.rmtree(self._step_dir(step))
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                          else "")
        logging.warning("removed the half-deleted checkpoint of step %d (missing %s)", step,
                        shown)
    _sync_processes("mtl_jax half-deleted checkpoints removed")

  def _reopen(self) -> None:
    self._manager.close()
    _sync_processes("mtl_jax checkpoints set aside")
    self._manager = self._open(self._keep)

  def wait(self) -> None:
    """Waits for the pending save, then writes the checksums of each finished step."""
    self._manager.wait_until_finished()
    if self._is_lead:
      for step in self._unsummed:
        directory = self._step_dir(step)
        if os.path.isdir(directory):
          atomic.write_json(os.path.join(directory, CHECKSUM_FILE), file_checksums(directory))
    self._unsummed = []

  def close(self) -> None:
    self.wait()
    self._manager.close()
