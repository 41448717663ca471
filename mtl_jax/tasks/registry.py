"""Task kinds by name. To add one: write `mtl_jax/tasks/<kind>.py` with a `base.Kind`
subclass, and add one line here."""

from __future__ import annotations

from mtl_jax.tasks import (base, binary, classification, depth, normals, regression,
                           segmentation)

KINDS: dict[str, base.Kind] = {
    "classification": classification.Classification(),
    "binary": binary.Binary(),
    "regression": regression.Regression(),
    "segmentation": segmentation.Segmentation(),
    "depth": depth.Depth(),
    "normals": normals.Normals(),
}


def get_kind(name: str, task: str | None = None) -> base.Kind:
  """The kind registered as `name`; ValueError (naming `task` if given) when there is none."""
  if name not in KINDS:
    where = f"task {task!r}: " if task is not None else ""
    raise ValueError(f"{where}unknown task kind {name!r}; known: {sorted(KINDS)}")
  return KINDS[name]
