"""Compares task-weighting methods on one config over several seeds: a table and a plot.

    python experiments/compare_weighting.py --config=configs/digits.py:missing=0.4 \
        --seeds=3 --stl --out=/tmp/compare_digits40
    python experiments/compare_weighting.py --config=configs/digits.py:runlocal \
        --methods=equal,gls,famo --seeds=2 --out=/tmp/compare_quick --config.num_steps=300

    python experiments/compare_weighting.py --config=configs/multi_mnist.py \
        --config.dataset.path=mnist.npz --seeds=1 --stl --out=/tmp/mm_paper \
        --methods="manual:weights=(0.5,0.5),uncertainty,gradnorm,mgda:grad_wrt='rep'"

A method may carry hyper-parameters, `name:key=value;key=value` (values as Python literals,
e.g. `--methods=stch,stch:log_losses=False`); the spec is its label in the table and plot.
Without `--stl`, `equal` always runs too, as the baseline of Δm%.
Each (method, seed) trains with `mtl_jax.train_and_evaluate` in `<out>/<method>/seed<k>`
(config.seed = the config's seed + k), so rerunning the command resumes or reuses finished
runs. `--stl` also trains each task alone (`config.tasks = (task,)`: the same model with one
head, the same steps, equal weighting) in `<out>/stl/<task>/seed<k>`: the single-task
baselines of the field's protocol.

Writes `<out>/results.md`: each task's test metric (accuracy for classification, MAE for
regression, the nine metrics of the NYUv2 tables for segmentation, depth and normals: see
`REPORTED`) as mean ± sample std over the seeds; Δm% (Maninis et al. 2019, see
`mtl_jax.metrics.delta_m`; positive = better) of each seed against the seed mean of the
single-task baselines (with `--stl`) or of equal weighting (without); and the mean rank of
each method over the task metrics (`mtl_jax.metrics.mean_rank`, 1 = best, the STL row not
ranked). Writes `<out>/weights.png`: each method's task weights over training (the seed
mean), read back from the `weight/<task>` scalars of the runs' TensorBoard files. A run whose
loss becomes non-finite is counted as diverged and left out of the means; a method the config
refuses (e.g. Krum on two tasks) is listed with the reason and not run. The script calls
`mtl_jax.cpu_tuning.apply()` before JAX starts, as `python -m mtl_jax.main` does
(`MTL_JAX_CPU_TUNING=0` turns it off).
"""

from __future__ import annotations

import ast
import os
import sys
import time
from typing import Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags
import numpy as np

import mtl_jax
from mtl_jax import atomic
from mtl_jax import cpu_tuning
from mtl_jax import quiet
from mtl_jax import events
from mtl_jax import metrics as metrics_lib
from mtl_jax import weighting

BASELINE = "equal"
STL = "STL"

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file (and ':options') whose get_config() returns a ConfigDict.",
    lock_config=True)
_METHODS = flags.DEFINE_string(
    "methods", None, "Comma-separated weighting methods to compare (name or "
    "name:key=value;key=value; commas inside brackets belong to a value); default every "
    "registered one but manual, aliases once.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Number of seeds per method.")
_OUT = flags.DEFINE_string("out", None, "Output directory for the runs, table and plot.")
_STL = flags.DEFINE_bool("stl", False, "Also train each task alone and report Δm% against "
                         "these single-task baselines (else against equal weighting).")


def default_methods() -> list[str]:
  """Every registered method but `manual` (it needs weights), aliases (same `make`) once."""
  names, makes = [], []
  for name, make in weighting.REGISTRY.items():
    if name != "manual" and make not in makes:
      names.append(name)
      makes.append(make)
  return names


def parse_method(spec: str) -> tuple[str, dict]:
  """("stch", {"mu": 0.5}) from "stch:mu=0.5"; values are Python literals, ";"-separated."""
  name, _, options = spec.partition(":")
  kwargs = {}
  for item in filter(None, options.split(";")):
    key, sep, value = item.partition("=")
    if not sep:
      raise app.UsageError(f"method {spec!r}: expected key=value, got {item!r}")
    try:
      kwargs[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      raise app.UsageError(f"method {spec!r}: {value!r} is not a Python literal") from None
  return name.strip(), kwargs


def split_methods(text: str) -> list[str]:
  """"a,b:w=(1,2)" -> ["a", "b:w=(1,2)"]: the commas outside brackets separate methods."""
  methods, depth, start = [], 0, 0
  for i, char in enumerate(text + ","):
    depth += (char in "([{") - (char in ")]}")
    if char == "," and depth == 0:
      methods.append(text[start:i].strip())
      start = i + 1
  return [m for m in methods if m]


def methods_to_run(requested: str | None, stl: bool = False) -> list[str]:
  """The requested method specs (default: all methods); without single-task baselines `equal`
  is the baseline and runs first."""
  methods = split_methods(requested) if requested else default_methods()
  unknown = [m for m in methods if parse_method(m)[0] not in weighting.REGISTRY]
  if unknown:
    raise app.UsageError(f"unknown method(s) {unknown}; known: {sorted(weighting.REGISTRY)}")
  if stl:
    return methods
  return [BASELINE] + [m for m in methods if m != BASELINE]


def run_one(config, method: str, seed: int, workdir: str,
            tasks: Sequence[str] = ()) -> dict[str, float] | None:
  """The final metrics of one training run, or None if its loss became non-finite.

  `tasks` (one task for a single-task baseline) replaces `config.tasks`; a config's fixed
  `task_weights` then no longer apply and are dropped.
  """
  name, kwargs = parse_method(method)
  config = config.copy_and_resolve_references()
  config.weighting = name
  config.weighting_kwargs = ml_collections.ConfigDict(kwargs)
  config.seed = seed
  if tasks:
    config.tasks = tuple(tasks)
    config.task_weights = None
  try:
    return mtl_jax.train_and_evaluate(config, workdir)
  except mtl_jax.NonFiniteLossError as e:
    logging.warning("%s seed %d diverged: %s", method, seed, e)
    return None


# The test metrics a table reports: accuracy (classification, binary), MAE (regression), and
# the per-pixel tasks' metrics as the NYUv2 tables report them (mtl_jax.tasks.segmentation,
# depth, normals), all of which Δm% averages, as Nash-MTL's `delta_fn` does.
REPORTED = ("accuracy", "mae", "miou", "pixel_accuracy", "abs_error", "rel_error", "mean_angle",
            "median_angle", "within_11.25", "within_22.5", "within_30")


def task_metrics(final: Mapping[str, float]) -> dict[str, str]:
  """{column: test metric name}, in task order then `REPORTED` order; the column is the task
  when it reports one metric, "<task> <metric>" when it reports several (dense tasks)."""
  found = {}
  for name in final:
    split, task, metric = (name.split("/") + ["", ""])[:3]
    if split == "test" and metric in REPORTED:
      found.setdefault(task, []).append((REPORTED.index(metric), name))
  columns = {}
  for task in sorted(found):
    names = [name for _, name in sorted(found[task])]
    for name in names:
      columns[task if len(names) == 1 else f"{task} {name.rsplit('/', 1)[-1]}"] = name
  return columns


def is_fraction(name: str) -> bool:
  """Whether a metric is a fraction the table shows in %: accuracies, mIoU, within-angle."""
  metric = name.rsplit("/", 1)[-1]
  return metric.endswith("accuracy") or metric == "miou" or metric.startswith("within_")


def task_of(name: str) -> str:
  """The task of a metric name "<split>/<task>/<metric>"."""
  return name.split("/")[1]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value, NaN for none)."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return float("nan"), float("nan")
  return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def seed_means(runs: Sequence[dict | None], names: Sequence[str]) -> dict[str, float]:
  """{metric: its mean over the runs that finished} for each of `names`."""
  done = [r for r in runs if r is not None]
  return {name: float(np.mean([r[name] for r in done])) for name in names}


def stl_baseline(stl_runs: Mapping[str, Sequence[dict | None]],
                 columns: Mapping[str, str]) -> dict[str, float]:
  """Each task's metric, seed-averaged over the runs that trained that task alone."""
  return {name: seed_means(stl_runs[task_of(name)], [name])[name] for name in columns.values()}


def summarise(results: Mapping[str, Sequence[dict | None]], columns: Mapping[str, str],
              baseline: Mapping[str, float]) -> dict[str, dict]:
  """Per method: mean ± std of each column and of Δm% against `baseline`, and its mean rank
  among the methods over the columns."""
  names = list(columns.values())
  ranked = {m: seed_means(runs, names) for m, runs in results.items()
            if any(r is not None for r in runs)}
  ranks = metrics_lib.mean_rank(ranked, names)
  summary = {}
  for method, runs in results.items():
    done = [r for r in runs if r is not None]
    summary[method] = {
        "runs": len(runs), "diverged": len(runs) - len(done),
        "metrics": {task: mean_std([r[name] for r in done]) for task, name in columns.items()},
        "delta_m": mean_std([metrics_lib.delta_m(r, baseline) for r in done]),
        "mean_rank": ranks.get(method, float("nan")),
    }
  return summary


def _cell(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
  if np.isnan(mean):
    return "—"
  return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def markdown_table(summary: Mapping[str, dict], columns: Mapping[str, str],
                   baseline_name: str, stl: Mapping[str, tuple[float, float]] | None = None
                   ) -> str:
  """The results as a markdown table, methods by Δm%, best first; fractions (`is_fraction`) in
  %, errors as they are.

  `stl` ({task: (mean, std)}) adds the single-task baselines as the first row.
  """
  header = (["method"] + [f"{task_of(name)} {name.rsplit('/', 1)[-1]}"
                          + (" (%)" if is_fraction(name) else "")
                          for name in columns.values()]
            + [f"Δm% vs {baseline_name}", "mean rank", "diverged"])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  scale = lambda name: 100.0 if is_fraction(name) else 1.0
  if stl is not None:
    cells = [STL] + [_cell(*stl[task], scale=scale(name)) for task, name in columns.items()]
    lines.append("| " + " | ".join(cells + ["0.00", "", ""]) + " |")
  by_delta = sorted(summary.items(), key=lambda item: -np.nan_to_num(item[1]["delta_m"][0],
                                                                       nan=-np.inf))
  for method, row in by_delta:
    cells = [method] + [_cell(*row["metrics"][task], scale=scale(name))
                        for task, name in columns.items()]
    cells += [_cell(*row["delta_m"]), f"{row['mean_rank']:.1f}",
              f"{row['diverged']}/{row['runs']}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def read_weights(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{task: (steps, weights)} from the `weight/<task>` scalars of a run's TensorBoard files
  (a resumed run's rewritten steps keep their latest value)."""
  curves = {}
  for tag, by_step in events.read_scalars(workdir).items():
    if tag.startswith("weight/"):
      steps = np.asarray(sorted(by_step))
      curves[tag.split("/", 1)[1]] = (steps, np.asarray([by_step[s] for s in steps]))
  return curves


def mean_curves(per_seed: Sequence[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The seed mean of each task's weight curve, over the steps every seed logged."""
  out = {}
  for task in per_seed[0] if per_seed else {}:
    steps = per_seed[0][task][0]
    for curves in per_seed[1:]:
      steps = np.intersect1d(steps, curves[task][0])
    values = [c[task][1][np.isin(c[task][0], steps)] for c in per_seed]
    out[task] = (steps, np.mean(values, axis=0))
  return out


def plot_weights(curves: Mapping[str, dict], path: str) -> None:
  """One panel per method: each task's weight over training (log scale for wide ranges)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  columns = min(4, len(curves))
  rows = -(-len(curves) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
  for ax, (method, tasks) in zip(axes.flat, curves.items()):
    for task, (steps, values) in tasks.items():
      ax.plot(steps, values, label=task)
    positive = [v for _, values in tasks.values() for v in values if v > 0]
    if positive and max(positive) / min(positive) > 100:
      ax.set_yscale("log")
    ax.set_title(method)
    ax.set_xlabel("step")
    ax.set_ylabel("task weight")
    ax.legend(fontsize="small")
  for ax in list(axes.flat)[len(curves):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def run_seeds(config, method: str, directory: str, tasks: Sequence[str] = ()
              ) -> tuple[list[dict | None], dict]:
  """The final metrics of each seed's run of `method` and the seed mean of its weight curves."""
  runs, weight_curves = [], []
  for k in range(_SEEDS.value):
    workdir = os.path.join(directory, f"seed{k}")
    runs.append(run_one(config, method, config.seed + k, workdir, tasks))
    if runs[-1] is not None:
      weight_curves.append(read_weights(workdir))
  return runs, mean_curves(weight_curves)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _CONFIG.value is None or _OUT.value is None:
    raise app.UsageError("--config and --out are required")
  config, out = _CONFIG.value, _OUT.value
  methods = methods_to_run(_METHODS.value, _STL.value)
  os.makedirs(out, exist_ok=True)
  start = time.perf_counter()

  results, curves, refused = {}, {}, {}
  for method in methods:
    directory = os.path.join(out, method.replace(":", "-").replace(";", "-"))
    try:
      results[method], curves[method] = run_seeds(config, method, directory)
    except mtl_jax.ConfigError as e:  # e.g. Krum on two tasks: reported, not run
      logging.warning("%s not run: %s", method, e)
      refused[method] = str(e)
  finished = [r for runs in results.values() for r in runs if r is not None]
  if not finished or not (_STL.value or any(r is not None for r in results[BASELINE])):
    sys.exit("every run of the baseline diverged: no baseline for Δm%")
  columns = task_metrics(finished[0])

  stl_runs, stl_cells = {}, None
  if _STL.value:
    for task in dict.fromkeys(task_of(name) for name in columns.values()):
      stl_runs[task], _ = run_seeds(config, BASELINE, os.path.join(out, "stl", task), [task])
    if any(not any(r is not None for r in runs) for runs in stl_runs.values()):
      sys.exit("every single-task run of a task diverged: no STL baseline for Δm%")
    baseline = stl_baseline(stl_runs, columns)
    stl_cells = {column: mean_std([r[name] for r in stl_runs[task_of(name)] if r is not None])
                 for column, name in columns.items()}
  else:
    baseline = seed_means(results[BASELINE], list(columns.values()))
  baseline_name = STL if _STL.value else BASELINE
  summary = summarise(results, columns, baseline)
  table = markdown_table(summary, columns, baseline_name, stl_cells)
  minutes = (time.perf_counter() - start) / 60
  note = (f"\n\nTest metrics over {_SEEDS.value} seed(s): mean ± sample std; Δm% per seed "
          f"against {baseline_name}'s seed mean (positive = better); mean rank over the task "
          f"metrics of the seed means (1 = best). Methods: {', '.join(methods)}. "
          f"Wall time of this invocation: {minutes:.1f} min.\n")
  note += "".join(f"\nNot run: {method} ({why}).\n" for method, why in refused.items())
  with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
    f.write(table + note)
  atomic.write_json(os.path.join(out, "results.json"),
                    {"summary": summary, "runs": results, "stl": stl_runs,
                     "baseline": baseline, "minutes": minutes, "refused": refused})
  plot_weights(curves, os.path.join(out, "weights.png"))
  print(table + note, flush=True)


if __name__ == "__main__":
  quiet.apply()  # the script owns its process: our output only,
  cpu_tuning.apply()  # and the CPU tuning before JAX starts its backend
  app.run(main)
