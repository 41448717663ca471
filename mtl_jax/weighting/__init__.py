"""Task-weighting methods, found by name: `get("equal")`, `get("manual", weights=(1, .5))`.

To add a method: write `mtl_jax/weighting/<name>.py` with a `make(**hyperparameters)` that
returns a `Weighting`, and add one line to REGISTRY.
"""

from __future__ import annotations

from mtl_jax.weighting import equal, manual
from mtl_jax.weighting.base import Weighting

REGISTRY = {
    "equal": equal.make,
    "manual": manual.make,
}


def get(name: str, **kwargs) -> Weighting:
  """The method registered as `name`, built with its hyper-parameters `kwargs`.

  Raises ValueError naming the problem: an unknown name or a bad hyper-parameter.
  """
  if name not in REGISTRY:
    raise ValueError(f"unknown weighting {name!r}; known: {sorted(REGISTRY)}")
  try:
    return REGISTRY[name](**kwargs)
  except TypeError as e:
    raise ValueError(f"weighting {name!r}: {e}") from None


__all__ = ["REGISTRY", "Weighting", "get"]
