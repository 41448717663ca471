"""What a run says in words: where it starts, its evaluations, and the table it ends with."""

from __future__ import annotations

import sys
from typing import Mapping, Sequence

import jax

SPLITS = ("val", "test")
TASKS_SHOWN = 4  # tasks named on an evaluation line; the rest are counted


def announce(message: str) -> None:
  """Prints `message` on process 0 (the others leave the console to it)."""
  if jax.process_index() == 0:
    print(message, file=sys.stdout, flush=True)


def starting(start: int, total: int, workdir: str) -> str:
  if start == 0:
    return f"training {total:,} steps in {workdir}"
  return f"resuming from step {start:,} of {total:,} in {workdir}"


def already_finished(total: int, results: str) -> str:
  return f"already finished at step {total:,}; results in {results}"


def _by_task(metrics: Mapping[str, float]) -> dict[str, dict[str, dict[str, float]]]:
  """{task: {metric: {split: value}}} of flat "<split>/<task>/<metric>" names, in order."""
  table: dict[str, dict[str, dict[str, float]]] = {}
  for name, value in metrics.items():
    parts = name.split("/")
    if len(parts) == 3 and parts[0] in SPLITS:
      split, task, metric = parts
      table.setdefault(task, {}).setdefault(metric, {})[split] = value
  return table


def evaluation_line(step: int, metrics: Mapping[str, float]) -> str:
  """"val at step 500: digit accuracy 0.9667, ...": each task's first metric other than its
  loss (or the loss when it has no other)."""
  parts = []
  for task, named in _by_task(metrics).items():
    metric = next((m for m in named if m != "loss"), "loss")
    value = next(iter(named[metric].values()))
    parts.append(f"{task} {metric} {value:.4g}")
  shown = parts[:TASKS_SHOWN] + ([f"+{len(parts) - TASKS_SHOWN} more"]
                                 if len(parts) > TASKS_SHOWN else [])
  splits = sorted({name.split("/")[0] for name in metrics if name.split("/")[0] in SPLITS})
  return f"{'/'.join(splits) or 'eval'} at step {step:,}: {', '.join(shown)}"


def metrics_table(metrics: Mapping[str, float]) -> str:
  """The final metrics as a table, a row per task and metric, a column per split; then the
  task weights of the last step."""
  table = _by_task(metrics)
  splits = [s for s in SPLITS if any(s in v for named in table.values() for v in named.values())]
  rows = [("task", "metric", *splits)]
  for task, named in table.items():
    for metric, values in named.items():
      rows.append((task, metric, *(f"{values[s]:.4f}" if s in values else "-" for s in splits)))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                     for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  weights = [f"{name.split('/', 1)[1]} {value:.3g}" for name, value in metrics.items()
             if name.startswith("weight/")]
  if weights:
    lines.append("task weights at the last step: " + ", ".join(weights))
  return "\n".join(lines)


def written(paths: Sequence[str]) -> str:
  return "written: " + ", ".join(paths)
