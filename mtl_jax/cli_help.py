"""`python -m mtl_jax.main --help`: the flags, then every config key with its default and meaning.

The meanings are the comments beside (or just above) each key in `config.default_config()`,
read from its source, so the schema stays the one place that documents itself.
"""

from __future__ import annotations

import inspect
import re
from typing import Iterator

import ml_collections

from mtl_jax import config as config_lib

_ASSIGNMENT = re.compile(r"^\s*c\.([\w.]+)\s*=\s*[^#]*?(?:#\s*(.*))?$")
_COMMENT = re.compile(r"^\s*#\s?(.*)$")


def meanings() -> dict[str, str]:
  """{"optimizer.learning_rate": "...", ...}: the comment on each key's line of
  `default_config()`, or the first sentence of the comment block right above it."""
  out, block = {}, []
  for line in inspect.getsource(config_lib.default_config).splitlines():
    comment = _COMMENT.match(line)
    if comment:
      block.append(comment.group(1).strip())
      continue
    assignment = _ASSIGNMENT.match(line)
    if assignment:
      key, trailing = assignment.groups()
      text = trailing or " ".join(block).split(". ")[0]
      if text:
        out[key] = text.strip()
    block = []
  return out


def _flat(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[tuple[str, object]]:
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict) and len(value):
      yield from _flat(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value.to_dict() if isinstance(value,
                                                            ml_collections.ConfigDict) else value


def config_keys_text() -> str:
  """One line per key: "  --config.<key>=<default>   <meaning>"."""
  described = meanings()
  rows = [(f"--config.{key}={value!r}", described.get(key, ""))
          for key, value in _flat(config_lib.default_config())]
  width = min(max(len(flag) for flag, _ in rows), 52)
  return "\n".join(f"  {flag:<{width}}  {meaning}".rstrip() if len(flag) <= width
                   else f"  {flag}\n  {'':<{width}}  {meaning}".rstrip()
                   for flag, meaning in rows)


def help_text(usage: str, flags_text: str) -> str:
  return (f"{usage.strip()}\n\nflags:\n{flags_text}\n\nconfig keys (a config file sets some, "
          f"--config.<key>=<value> overrides any; defaults from "
          f"mtl_jax.config.default_config()):\n{config_keys_text()}\n")
