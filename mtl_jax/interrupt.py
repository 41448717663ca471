"""SIGTERM as a request to stop at the next safe point, not a kill.

A preempted job gets SIGTERM and a grace period. The handler only records the signal; the
train loop checks `requested()` between dispatches (checkpoint, then stop), before its first
one (nothing to save) and after the final evaluation (which finishes, so `final_metrics.json`
is written). The entry point (`mtl_jax.main`) installs it for the whole run, start-up and
compilation included; the loop installs it too, for Python callers, and leaves signals as it
found them.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

_requested = False


def requested() -> bool:
  """Whether SIGTERM arrived while a handler of this module was installed."""
  return _requested


def _handle(signum, frame) -> None:  # pylint: disable=unused-argument
  global _requested
  _requested = True


@contextlib.contextmanager
def handle_sigterm() -> Iterator[None]:
  """Records SIGTERM (instead of dying) inside the block; a no-op outside the main thread."""
  try:
    previous = signal.signal(signal.SIGTERM, _handle)
  except ValueError:  # not the main thread: leave signals alone
    yield
    return
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def reset() -> None:
  """Forgets a recorded SIGTERM: for a process that trains again after one stopped."""
  global _requested
  _requested = False
