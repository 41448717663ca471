"""Checks of a run's inputs that must pass before any data is loaded, compiled or written.

Each raises one `ConfigError` naming the problem, so the command line prints one line and
exits 2 with the workdir untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np

from mtl_jax.errors import ConfigError

RUN_FILE = "run.json"
# Config keys a rerun may change without being a different run.
_FREE_TO_CHANGE = ("notes", "allow_config_change")


def check_workdir(workdir: str) -> None:
  """ConfigError unless `workdir` is a directory, or can be made one, that this process can
  write; nothing is created."""
  path = os.path.abspath(workdir)
  if os.path.exists(path):
    if not os.path.isdir(path):
      raise ConfigError(f"--workdir {workdir} is a file, not a directory")
    existing = path
  else:
    existing = os.path.dirname(path)
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
      raise ConfigError(f"--workdir {workdir} lies under {existing}, which is a file")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir {workdir}: {existing} is not writable")


def check_labelled(split_labels: Mapping[str, Mapping[str, np.ndarray]],
                   tasks: Sequence[Any]) -> None:
  """ConfigError naming the first task without a labelled example in a split.

  Args:
    split_labels: {split name: {task: encoded labels, -1 / NaN missing}}, e.g. train and val.
    tasks: the `mtl_jax.tasks.Task`s, whose `labelled_examples` says which rows count.
  """
  from mtl_jax import tasks as tasks_lib  # pylint: disable=import-outside-toplevel
  for split, labels in split_labels.items():
    for task in tasks:
      if not tasks_lib.labelled_examples(task, labels[task.name]).any():
        raise ConfigError(f"task {task.name!r} has no labelled example in the {split} split"
                          + (" (config.dataset.missing_fraction blanks them all?)"
                             if split == "train" else ""))


def config_changes(saved: Any, current: Any, prefix: str = "config",
                   defaults: Any = None) -> list[str]:
  """Every key whose value differs between two JSON-like configs, as "key: old -> new".

  With `defaults` (a JSON-like tree like them: `default_config()`'s values), keys the library
  added or removed since the saved run are no change: a key the saved config lacks counts as
  its default, a key the current one lacks is skipped.
  """
  if isinstance(saved, dict) and isinstance(current, dict):
    known = defaults if isinstance(defaults, dict) else None
    changes = []
    for key in sorted(set(saved) | set(current)):
      if known is not None and key not in current:
        continue
      old = known[key] if known is not None and key not in saved and key in known else (
          saved.get(key))
      changes += config_changes(old, current.get(key), f"{prefix}.{key}",
                                None if known is None else known.get(key))
    return changes
  return [] if saved == current else [f"{prefix}: {saved!r} -> {current!r}"]


def default_values() -> dict:
  """`mtl_jax.config.default_config()` as JSON-like values (lists for tuples), to compare a
  saved config with (`config_changes`)."""
  from mtl_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  return json.loads(json.dumps(config_lib.default_config().to_dict()))


def check_same_config(workdir: str, config: dict) -> None:
  """ConfigError naming what changed when `workdir` holds checkpoints of a run with another
  config, unless `config["allow_config_change"]`.

  A rerun resumes from the latest checkpoint and rewrites run.json; with a changed learning
  rate or step count the record would then describe a run that never happened.
  """
  path = os.path.join(workdir, RUN_FILE)
  directory = os.path.join(workdir, "checkpoints")
  if (config.get("allow_config_change") or not os.path.isfile(path)
      or not any(name.isdigit() for name in _listdir(directory))):
    return
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f).get("config", {})
  except (OSError, ValueError, AttributeError) as e:
    raise ConfigError(f"{path} cannot be read ({type(e).__name__}); use another --workdir "
                      "or --config.allow_config_change=True") from None
  strip = lambda c: {k: v for k, v in c.items() if k not in _FREE_TO_CHANGE}
  changes = config_changes(strip(saved), strip(json.loads(json.dumps(config))),
                           defaults=default_values())
  if changes:
    raise ConfigError(f"{workdir} holds checkpoints of a run with another config "
                      f"({'; '.join(changes)}); use another --workdir, or "
                      "--config.allow_config_change=True to continue it with the new values")


def _listdir(directory: str) -> list[str]:
  return os.listdir(directory) if os.path.isdir(directory) else []


def name_bad_files(bad: Sequence[str], shown: int = 5) -> str:
  """Every path of `bad`: "a, b" when there are at most `shown`, else the first `shown` and
  the name of a temporary file listing them all (the workdir stays untouched)."""
  if len(bad) <= shown:
    return ", ".join(bad)
  fd, path = tempfile.mkstemp(prefix="mtl_jax_bad_files_", suffix=".txt")
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    f.write("\n".join(bad) + "\n")
  return f"{', '.join(bad[:shown])} ... (all {len(bad)} listed in {path})"
