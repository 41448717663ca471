"""Every registered architecture with a few weighting methods on one config: one table.

    python experiments/compare_architectures.py --config=configs/digits.py \
        --methods=equal,uncertainty,mgda --seeds=1 --out=/tmp/compare_architectures

Flags `--config`, `--methods` (default equal, uncertainty, mgda), `--seeds` and `--out` are
compare_weighting.py's; `--architectures` (default every registered one) is this script's.

Each (architecture, method, seed) trains with `mtl_jax.train_and_evaluate` in
`<out>/<architecture>/<method>/seed<k>` (so a rerun reuses finished runs), the architecture's
hyper-parameters its defaults, every other setting the config's. Writes `<out>/results.md`
(each task's test metric per architecture and method, mean ± sample std over the seeds, Δm%
against `hps` with `equal`, and the wall time of a run) and `<out>/results.json`.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
from absl import app
from absl import flags
import numpy as np

from mtl_jax import atomic
from mtl_jax import cpu_tuning
from mtl_jax import quiet
from mtl_jax import metrics as metrics_lib
from mtl_jax import models

import compare_weighting  # its flags --config, --methods, --seeds and --out are this script's

_ARCHITECTURES = flags.DEFINE_list("architectures", None,
                                   "Registered architectures; default all of them.")
_CONFIG, _OUT, _SEEDS = compare_weighting._CONFIG, compare_weighting._OUT, compare_weighting._SEEDS  # pylint: disable=protected-access
DEFAULT_METHODS = ("equal", "uncertainty", "mgda")
BASELINE = ("hps", "equal")


def markdown_table(rows: dict, columns: dict) -> str:
  """rows {(architecture, method): summary} as a markdown table; accuracies in %."""
  header = ["architecture", "method"] + [
      f"{task} {name.rsplit('/', 1)[-1]}" + (" (%)" if name.endswith("accuracy") else "")
      for task, name in columns.items()] + ["Δm% vs hps/equal", "seconds per run"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for (architecture, method), row in rows.items():
    cells = [architecture, method]
    for task, name in columns.items():
      scale = 100.0 if name.endswith("accuracy") else 1.0
      cells.append(compare_weighting._cell(*row["metrics"][task], scale=scale))  # pylint: disable=protected-access
    cells.append(compare_weighting._cell(*row["delta_m"]))  # pylint: disable=protected-access
    cells.append(f"{row['seconds']:.1f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _CONFIG.value is None or _OUT.value is None:
    raise app.UsageError("--config and --out are required")
  architectures = _ARCHITECTURES.value or models.spec_built()
  unknown = sorted(set(architectures) - set(models.REGISTRY))
  if unknown:
    raise app.UsageError(f"unknown architectures {unknown}; known: {sorted(models.REGISTRY)}")
  runs, seconds = {}, {}
  for architecture in architectures:
    config = _CONFIG.value.copy_and_resolve_references()
    config.model.name = architecture
    for method in compare_weighting._METHODS.value or DEFAULT_METHODS:  # pylint: disable=protected-access
      start, results = time.perf_counter(), []
      for k in range(_SEEDS.value):
        workdir = os.path.join(_OUT.value, architecture, method.replace(":", "-"), f"seed{k}")
        results.append(compare_weighting.run_one(config, method, config.seed + k, workdir))
      runs[architecture, method] = results
      seconds[architecture, method] = (time.perf_counter() - start) / _SEEDS.value

  finished = [r for results in runs.values() for r in results if r is not None]
  columns = compare_weighting.task_metrics(finished[0])
  baseline_runs = [r for r in runs.get(BASELINE, ()) if r is not None] or finished
  baseline = {name: float(np.mean([r[name] for r in baseline_runs])) for name in columns.values()}
  rows = {}
  for key, results in runs.items():
    done = [r for r in results if r is not None]
    rows[key] = {"metrics": {task: compare_weighting.mean_std([r[name] for r in done])
                             for task, name in columns.items()},
                 "delta_m": compare_weighting.mean_std(
                     [metrics_lib.delta_m(r, baseline) for r in done]),
                 "diverged": len(results) - len(done), "seconds": seconds[key]}
  table = markdown_table(rows, columns)
  note = (f"\n\nTest metrics over {_SEEDS.value} seed(s), mean ± sample std; Δm% against "
          f"{'/'.join(BASELINE)}; seconds per run include compilation.\n")
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "results.md"), "w", encoding="utf-8") as f:
    f.write(table + note)
  atomic.write_json(os.path.join(_OUT.value, "results.json"),
                    {"/".join(k): {**v, "runs": runs[k]} for k, v in rows.items()})
  print(table + note, flush=True)


if __name__ == "__main__":
  quiet.apply()  # the script owns its process: our output only,
  cpu_tuning.apply()  # and the CPU tuning before JAX starts its backend
  app.run(main)
