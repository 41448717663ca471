"""Installed size of a requirement set, from the distributions installed in this environment.

    python experiments/install_size.py "mtl_jax" "mtl_jax[tfds]"

The closure of each requirement's dependencies (extras followed, environment markers
evaluated) is summed over the files each distribution's RECORD lists. Nothing is downloaded:
a dependency not installed here is reported and left out.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _size(dist: md.Distribution) -> int:
  total = 0
  for file in dist.files or ():
    path = file.locate()
    if os.path.isfile(path):
      total += os.path.getsize(path)
  return total


def closure(requirement: str) -> tuple[dict[str, int], set[str]]:
  """({distribution: bytes}, {requirements not installed}) of `requirement` and its deps."""
  seen, missing, todo = {}, set(), [Requirement(requirement)]
  while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    try:
      dist = md.distribution(req.name)
    except md.PackageNotFoundError:
      missing.add(name)
      continue
    first_visit = name not in seen
    if first_visit:
      seen[name] = _size(dist)
    for text in dist.requires or ():
      dep = Requirement(text)
      for extra in [""] + sorted(req.extras):
        if dep.marker is None or dep.marker.evaluate({"extra": extra}):
          if canonicalize_name(dep.name) not in seen or dep.extras:
            if not (canonicalize_name(dep.name) == name and not dep.extras - req.extras):
              todo.append(dep)
          break
  return seen, missing


def main() -> None:
  for requirement in sys.argv[1:]:
    sizes, missing = closure(requirement)
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:6]
    print(f"{requirement}: {sum(sizes.values()) / 2**20:,.0f} MiB in {len(sizes)} distributions"
          f"; largest: " + ", ".join(f"{n} {s / 2**20:,.0f}" for n, s in top)
          + (f"; not installed here: {sorted(missing)}" if missing else ""))


if __name__ == "__main__":
  main()
