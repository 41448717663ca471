"""The best checkpoint by a chosen validation metric (`config.best_metric`), beside the latest.

`config.best_metric = "val/digit/accuracy"` keeps, in `<workdir>/best/`, the train state of the
evaluation where that metric was best so far (highest, or lowest for a loss, MAE or RMSE:
`metrics.lower_is_better`), with `best.json` naming its step and value; `mj.load(workdir,
best=True)` loads it. The latest checkpoints, which a rerun resumes from, are unaffected.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax

from mtl_jax import atomic
from mtl_jax import checkpoint as checkpoint_lib
from mtl_jax import metrics as metrics_lib
from mtl_jax.errors import ConfigError

DIRECTORY = "best"
RECORD_FILE = "best.json"


def check_name(name: str, task_names) -> None:
  """ConfigError unless `name` is "val/<task>/<metric>" of one of `task_names`."""
  parts = name.split("/")
  if len(parts) != 3 or parts[0] != "val" or parts[1] not in task_names:
    raise ConfigError(f"config.best_metric={name!r}: expected 'val/<task>/<metric>' with a task "
                      f"among {list(task_names)}, e.g. 'val/{task_names[0]}/loss'")


def check_metric(name: str, metrics: Mapping[str, float]) -> None:
  """ConfigError unless an evaluation's `metrics` hold `name`."""
  if name not in metrics:
    task = name.split("/")[1]
    known = sorted(k for k in metrics if k.startswith(f"val/{task}/"))
    raise ConfigError(f"config.best_metric={name!r}: the validation metrics of {task!r} are "
                      f"{known}")


class BestCheckpoint:
  """Saves a state whenever `metric` improves on the best recorded in `workdir`."""

  def __init__(self, workdir: str, metric: str):
    self.metric = metric
    self._record_path = os.path.join(workdir, RECORD_FILE)
    self._checkpoints = checkpoint_lib.Checkpointer(workdir, keep=1, subdir=DIRECTORY)
    self.best = self._read()

  def _read(self) -> dict | None:
    if not os.path.isfile(self._record_path):
      return None
    with open(self._record_path, encoding="utf-8") as f:
      record = json.load(f)
    return record if record.get("metric") == self.metric else None

  def _better(self, value: float) -> bool:
    if self.best is None:
      return True
    if metrics_lib.lower_is_better(self.metric):
      return value < self.best["value"]
    return value > self.best["value"]

  def update(self, step: int, metrics: Mapping[str, float], state: Any, run_info: dict) -> bool:
    """Saves `state` as the best if `metrics[metric]` improves; whether it did."""
    value = float(metrics[self.metric])
    if not self._better(value):
      return False
    self._checkpoints.save(step, state, run_info)
    self._checkpoints.wait()
    self.best = {"metric": self.metric, "value": value, "step": step}
    if jax.process_index() == 0:
      atomic.write_json(self._record_path, self.best)
    return True

  def close(self) -> None:
    self._checkpoints.close()
