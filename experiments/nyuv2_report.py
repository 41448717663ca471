"""The NYUv2 table of Nash-MTL and FAMO from runs of `configs/nyuv2.py`: each metric averaged
over the last 10 epochs' test evaluations, and Δm% against the single-task baseline.

    python experiments/nyuv2_report.py --runs=equal=/tmp/nyu_equal,nash_mtl=/tmp/nyu_nash \
        [--last 10] [--stl=/tmp/nyu_stl_segmentation,/tmp/nyu_stl_depth,/tmp/nyu_stl_normals] \
        [--out table.md]

A run of `configs/nyuv2.py` evaluates the test set after every epoch (as "val": the protocol
has no validation split) and writes the scalars to TensorBoard in its workdir; the reported
score of those papers is the mean of the last 10 epochs' test metrics (Nash-MTL's
experiments/nyuv2/trainer.py prints every epoch's; FAMO's README says the last 10 are
averaged). This reads the `val/<task>/<metric>` scalars of the last `--last` evaluations of
each run (the final one included: it is the 200th epoch's).

Δm% (`mtl_jax.metrics.delta_m`) is against `--stl` runs (one single-task run per task,
`--config.tasks=<task>`, read the same way) when given, else against the single-task SegNet
numbers CAGrad reports, which Nash-MTL's `delta_fn` (experiments/nyuv2/utils.py, `BASE`) and
FAMO use: mIoU 38.30, pixel accuracy 63.76, depth absolute error 0.6754 and relative error
0.2780, normals mean angle 25.01 and median 19.21, within 11.25/22.5/30 degrees 30.14, 57.20,
69.15 (%).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=wrong-import-position
import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from mtl_jax import metrics as metrics_lib

METRICS = ("segmentation/miou", "segmentation/pixel_accuracy", "depth/abs_error",
           "depth/rel_error", "normals/mean_angle", "normals/median_angle",
           "normals/within_11.25", "normals/within_22.5", "normals/within_30")
PUBLISHED_STL = dict(zip(METRICS, (0.3830, 0.6376, 0.6754, 0.2780, 25.01, 19.21, 0.3014, 0.5720,
                                   0.6915)))
SPLIT = "val"


def read_scalars(workdir: str, prefix: str = SPLIT + "/") -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of a run's TensorBoard scalars whose tag starts with `prefix`."""
  accumulator = event_accumulator.EventAccumulator(
      workdir, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return {tag: {e.step: float(tensor_util.make_ndarray(e.tensor_proto))
                for e in accumulator.Tensors(tag)}   # a resumed run rewrites some steps
          for tag in accumulator.Tags()["tensors"] if tag.startswith(prefix)}


def last_mean(scalars: dict[str, dict[int, float]], last: int) -> dict[str, float]:
  """{metric: mean of its last `last` evaluations} for the `METRICS` a run logged."""
  out = {}
  for metric in METRICS:
    by_step = scalars.get(f"{SPLIT}/{metric}")
    if by_step:
      steps = sorted(by_step)[-last:]
      out[metric] = float(np.mean([by_step[s] for s in steps]))
  return out


def table(results: dict[str, dict[str, float]], baseline: dict[str, float]) -> str:
  """A markdown table: each run's metrics (mIoU, accuracies and fractions in %; depth errors
  to four places, as the papers print them) and Δm%."""
  percent = lambda m: not m.startswith("depth") and "angle" not in m
  cell = lambda m, v: f"{v * 100:.2f}" if percent(m) else (
      f"{v:.4f}" if m.startswith("depth") else f"{v:.2f}")
  header = ["run"] + [m.replace("/", " ") for m in METRICS] + ["Δm%"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, values in [("STL", baseline)] + list(results.items()):
    cells = [name] + [cell(m, values[m]) if m in values else "—" for m in METRICS]
    have = {m: values[m] for m in METRICS if m in values}
    delta = metrics_lib.delta_m(have, {m: baseline[m] for m in have}) if have else float("nan")
    lines.append("| " + " | ".join(cells + [f"{delta:+.2f}"]) + " |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", required=True, help="label=workdir,label=workdir,...")
  parser.add_argument("--last", type=int, default=10, help="evaluations to average")
  parser.add_argument("--stl", default="", help="workdirs of the single-task runs, comma-"
                      "separated; default: the published single-task numbers")
  parser.add_argument("--out", default="", help="also write the table to this file")
  args = parser.parse_args()
  runs = dict(item.split("=", 1) for item in args.runs.split(",") if item)
  for label, workdir in runs.items():
    if not os.path.isdir(workdir):
      sys.exit(f"nyuv2_report: --runs {label}: {workdir} is not a directory")
  results = {label: last_mean(read_scalars(workdir), args.last)
             for label, workdir in runs.items()}
  baseline = dict(PUBLISHED_STL)
  if args.stl:
    baseline = {}
    for workdir in args.stl.split(","):
      baseline.update(last_mean(read_scalars(workdir), args.last))
  text = table(results, baseline)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
