"""Config files by path or by name: `--config=configs/digits.py` or `--config=digits`.

A name without ".py" that is not a file is looked up among the config files that ship with
the package (`mtl_jax.configs`, the repository's `configs/` directory in an installed copy),
so `mtl-jax --config=digits:runlocal` works outside a checkout.
"""

from __future__ import annotations

import importlib.resources
import os

PACKAGE = "mtl_jax.configs"


def packaged_directory() -> str | None:
  """The directory of the packaged config files: the installed `mtl_jax.configs`, else the
  `configs/` beside the `mtl_jax` package of a checkout; None if neither exists."""
  try:
    return os.fspath(importlib.resources.files(PACKAGE))
  except ModuleNotFoundError:
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs")
    return checkout if os.path.isdir(checkout) else None


def names() -> list[str]:
  directory = packaged_directory()
  if directory is None:
    return []
  return sorted(f[:-3] for f in os.listdir(directory)
                if f.endswith(".py") and not f.startswith("_"))


def resolve(value: str) -> str:
  """`value` ("path.py[:options]" or "name[:options]") with a packaged name made a path; any
  other value is returned as it is (a missing file is reported by the caller)."""
  path, sep, options = value.partition(":")
  if os.path.isfile(path) or path.endswith(".py") or path not in names():
    return value
  return os.path.join(packaged_directory(), f"{path}.py") + sep + options
