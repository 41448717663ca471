"""Atomic file writes: a temporary file beside the target, then a rename, so a reader (or a
resumed run after a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
from typing import Any


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented, key-sorted JSON to `path` atomically."""
  write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
