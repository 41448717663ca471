"""Every registered weighting method on every registered architecture, a few steps each.

    python experiments/check_models.py --steps=20 --out=/tmp/check_models.md

The three digits tasks (`configs/digits.py`'s data, batch 128) train for `--steps` steps with
the library's jit-compiled step on one device, each architecture with its default
hyper-parameters. A cell is `ok` when every loss and parameter stays finite and the summed
training loss of the last step is below the first's; otherwise it names what went wrong. The
table (methods x architectures) is printed and written to `--out`.
"""

from __future__ import annotations

import os
import time
import traceback

# pylint: disable=wrong-import-position
from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

import mtl_jax as mj
from mtl_jax import atomic, build, cpu_tuning, models, quiet, sharding, train, weighting

_STEPS = flags.DEFINE_integer("steps", 20, "Train steps per (method, architecture).")
_ARCHITECTURES = flags.DEFINE_list("architectures", None, "Default: every registered one.")
_METHODS = flags.DEFINE_list("methods", None, "Default: every registered one.")
_OUT = flags.DEFINE_string("out", None, "Also write the markdown table here (and .json).")

# Methods that need a hyper-parameter to run at all.
HYPERPARAMETERS = {"manual": {"weights": (1.0, 1.0, 1.0)}}
BATCH = 128


def check(architecture: str, method: str, data, steps: int) -> tuple[str, dict]:
  """("ok" or what failed, {first/last loss, seconds})."""
  config = mj.config.complete(mj.default_config())
  config.model.name = architecture
  config.weighting = method
  config.weighting_kwargs = ml_collections.ConfigDict(HYPERPARAMETERS.get(method, {}))
  config.num_steps = steps
  tasks = data.tasks
  start = time.perf_counter()
  setup = build.build_setup(config, tasks, steps_per_epoch=len(data.train.inputs) // BATCH)
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = train.create_train_state(setup, 0, data.train.inputs[:1], mesh)
  step = train.make_step_fn(setup, mesh)
  rng = np.random.default_rng(0)
  totals = []
  for _ in range(steps):
    rows = rng.choice(len(data.train.inputs), BATCH, replace=False)
    batch = {"inputs": data.train.inputs[rows],
             "labels": {t: v[rows] for t, v in data.train.labels.items()}}
    state, losses = step(state, batch)
    totals.append(float(np.sum(jax.device_get(losses))))
  finite = all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state.params)))
  info = {"first": totals[0], "last": totals[-1], "seconds": time.perf_counter() - start}
  if not (finite and np.all(np.isfinite(totals))):
    return "non-finite", info
  return ("ok" if totals[-1] < totals[0] else "loss did not fall"), info


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  architectures = _ARCHITECTURES.value or models.spec_built()
  methods = _METHODS.value or sorted(weighting.REGISTRY)
  data = mj.data.load(mj.default_config().dataset)
  results = {}
  for architecture in architectures:
    for method in methods:
      try:
        verdict, info = check(architecture, method, data, _STEPS.value)
      except Exception as e:  # pylint: disable=broad-except
        verdict, info = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}", {}
        traceback.print_exc()
      results[f"{architecture}/{method}"] = {"verdict": verdict, **info}
      print(f"{architecture:>13} {method:>12}: {verdict} "
            + (f"(loss {info['first']:.3f} -> {info['last']:.3f}, {info['seconds']:.1f} s)"
               if info else ""), flush=True)
  header = "| method | " + " | ".join(architectures) + " |"
  lines = [header, "|" + "---|" * (len(architectures) + 1)]
  for method in methods:
    cells = [results[f"{a}/{method}"]["verdict"] for a in architectures]
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  failures = sum(r["verdict"] != "ok" for r in results.values())
  table = "\n".join(lines) + (f"\n\n{len(results) - failures}/{len(results)} ok after "
                              f"{_STEPS.value} steps.\n")
  print(table, flush=True)
  if _OUT.value:
    with open(_OUT.value, "w", encoding="utf-8") as f:
      f.write(table)
    atomic.write_json(os.path.splitext(_OUT.value)[0] + ".json", results)
  return 1 if failures else 0


if __name__ == "__main__":
  quiet.apply()  # the script owns its process: our output only,
  cpu_tuning.apply()  # and the CPU tuning before JAX starts its backend
  app.run(main)
