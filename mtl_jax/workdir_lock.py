"""One run per workdir: a lock file naming its holder, released on exit.

Two runs on one workdir would share orbax's temporary directories and race on deletions. The
lock is `<workdir>/lock.json` ({"pid", "host"}), created exclusively. A lock whose holder is a
dead process on this host is taken over; one held by a live process, or by another host (whose
processes cannot be checked from here), refuses the run with one `ConfigError`. In a
multi-process run process 0 holds it for all; the others learn whether it could.

Re-entrant within a process: `train_and_evaluate` called by the command line, which already
holds the lock, takes it again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from typing import Iterator

from mtl_jax.errors import ConfigError

LOCK_FILE = "lock.json"
_held: dict[str, int] = {}  # lock path -> how many times this process holds it
_created: set[str] = set()  # lock paths whose workdir this process created to hold them


def _holder() -> dict:
  return {"pid": os.getpid(), "host": socket.gethostname()}


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except OSError as e:
    return e.errno == errno.EPERM  # exists, owned by someone else
  return True


def _read(path: str) -> dict | None:
  """The holder written in `path`, {} if unreadable (a lock being written), None if absent."""
  try:
    with open(path, encoding="utf-8") as f:
      holder = json.load(f)
    return holder if isinstance(holder, dict) else {}
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}


def _is_stale(holder: dict) -> bool:
  """Whether the lock's holder is a process of this host that no longer runs."""
  if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
    return False
  return holder["pid"] != os.getpid() and not _alive(holder["pid"])


def acquire(workdir: str) -> str:
  """Takes the lock of `workdir` (created if needed); returns its path.

  Raises:
    ConfigError: another live run holds it, naming its process and host.
  """
  path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
  if path in _held:
    _held[path] += 1
    return path
  if not os.path.isdir(os.path.dirname(path)):
    os.makedirs(os.path.dirname(path))
    _created.add(path)
  for _ in range(3):  # a stale lock removed by a racing run: try again
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read(path)
      if holder is not None and not _is_stale(holder):
        raise ConfigError(
            f"{workdir} is in use by another run (process {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}, {path}); wait for it to end, or remove {path} if "
            "that run is dead") from None
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)  # the holder is dead: take the lock over
      continue
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(_holder(), f)
    _held[path] = 1
    return path
  raise ConfigError(f"{workdir}: could not take the lock {path}; another run is starting")


def release(path: str) -> None:
  """Releases one hold of the lock at `path`; the file goes with the last one."""
  _held[path] -= 1
  if _held[path] == 0:
    del _held[path]
    if _read(path) == _holder():
      os.remove(path)
    if path in _created:  # a run that stopped before its first file leaves no workdir behind
      _created.discard(path)
      with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))  # only if empty


@contextlib.contextmanager
def hold(workdir: str, *, is_lead: bool = True) -> Iterator[None]:
  """The lock of `workdir` for the duration of the block, taken by the lead process only.

  Every process of a multi-process run must enter together: whether the lead got the lock is
  shared (`mtl_jax.sharding.any_process`), so all of them refuse or all go on.
  """
  from mtl_jax import sharding  # pylint: disable=import-outside-toplevel
  path, error = None, None
  if is_lead:
    try:
      path = acquire(workdir)
    except ConfigError as e:
      error = e
  if sharding.any_process(error is not None):
    raise error or ConfigError(f"{workdir} is in use by another run (process 0 could not take "
                               f"its lock {os.path.join(workdir, LOCK_FILE)})")
  try:
    yield
  finally:
    if path is not None:
      release(path)
