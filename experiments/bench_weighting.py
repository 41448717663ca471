"""Milliseconds per train step of every weighting method, T = 2, 4, 8 tasks, MLP and convnet.

    flock /tmp/bench.lock python experiments/bench_weighting.py --out /tmp/bench_weighting.json
    flock /tmp/bench.lock python experiments/bench_weighting.py --out /tmp/bw.json \
        --models mlp --tasks 8 --methods equal,jacobian,mgda,cagrad --repeats 5

Models (synthetic data, T classification tasks of 10 classes, every label present, Adam):
* `mlp`: inputs f32[128, 784] -> shared Dense(256) + ReLU -> T heads of one Dense(10). Timed
  through the in-memory loop's own path, `train.make_train_fn` (`--mlp_steps` steps per
  dispatch in a `lax.scan`, the batch gathered on the device from a fixed index).
* `cnn`: inputs f32[64, 64, 64, 3] -> conv32-p-conv64-p-conv128 (3x3, ReLU) -> T heads of
  global max pooling + Dense(10). Timed through `train.make_step_fn`, one step per dispatch
  (convolution gradients inside `lax.scan` miss XLA:CPU's fast kernel, jax-ml/jax#12868).

Every method builds its Setup with `build.build_setup` from a config (`config.weighting`,
`config.weighting_kwargs`), its state with `train.create_train_state`, and its jitted step is
compiled once (`.lower().compile()`, whose `memory_analysis()` gives the temp bytes) and run
on one fixed batch (Auto-λ, which draws look-ahead batches from a validation split, draws them
from that batch too). Methods: `equal`, every registered method but `manual` (aliases once),
each gradient method also in the representation mode (`/rep`) where it allows it, the
LOG_VARIANTS also on the gradients of log L_i (`+log`, `log_losses=True`; `--methods` takes
`<name>+log` for any gradient method), and `jacobian`:
the per-task gradients alone (with their Gram matrix, which every gradient method gets),
combined with mean weights, from a method registered here for the run. On the MLP, methods
that read only the Gram matrix take it from `gradients.dense_gram` without building J, so
they can cost less than `jacobian`. `trunk_forward` and
`trunk_backward` time the shared trunk alone (its forward; its forward and one VJP to its
parameters), giving the floor of the Jacobian, (1 + T b) / (1 + b) times `equal`, with
b = backward / forward of the trunk.

Timing: after a warm-up, `--repeats` rounds; each round times every configuration of a
(model, T) once, in turn, so a drifting machine load spreads over all of them; the figure is
the median over rounds. Writes one JSON object:
  "<model>/T<n>/<method>[/rep]": ms per step (also "jacobian", "jacobian/rep",
    "trunk_forward", "trunk_backward"),
  "ratio/<model>/T<n>/<method>[/rep]": that over `equal` of the same (model, T),
  "temp_mib/<model>/T<n>/<method>[/rep]": XLA's temp allocation of the compiled step, MiB,
  "floor/<model>/T<n>": the Jacobian floor as a ratio to `equal`,
  "skipped/<model>/T<n>/<method>[/rep]": why a configuration was not measured,
  "load": the 1-minute load average at the start and at the end.
`--append` merges into an existing `--out` file (to run the groups one at a time). The script
calls `mtl_jax.cpu_tuning.apply()` before JAX starts, as `python -m mtl_jax.main` does
(`MTL_JAX_CPU_TUNING=0` turns it off).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import atomic
from mtl_jax import config as config_lib
from mtl_jax import cpu_tuning
from mtl_jax import build
from mtl_jax.models import base as models_base
from mtl_jax import sharding as sharding_lib
from mtl_jax import train
from mtl_jax import weighting
from mtl_jax.config import ConfigError
from mtl_jax.tasks import Task

MODELS = ("mlp", "cnn")
NUM_CLASSES = 10
JACOBIAN = "jacobian"  # the per-task gradients combined with mean weights, registered here
EQUAL = "equal"
SKIP = ("manual",)     # needs weights from the user
STEPS_PER_EPOCH = 100  # for methods scheduled by epochs (stch)
MIB = 2.0 ** 20
REFERENCES = ("trunk_forward", "trunk_backward")  # timed beside the steps, for the floor


# Gradient methods also measured on the gradients of log L_i (`log_losses=True`, DB-MTL's
# log-MGDA, log-CAGrad, log-IMTL, log-Nash-MTL); label "<name>+log".
LOG_VARIANTS = ("mgda", "cagrad", "imtl", "nash_mtl")
LOG = "+log"


class Variant(NamedTuple):
  """One measured configuration of a (model, T): a method, its gradient mode, log losses."""
  method: str
  grad_wrt: str | None  # "rep" for the representation mode, else None (the method's default)
  log_losses: bool = False

  @property
  def label(self) -> str:
    return (self.method + (LOG if self.log_losses else "")
            + ("/rep" if self.grad_wrt == "rep" else ""))


# ----------------------------------------------------------------------------------------------
# The temporary `jacobian` method.


def make_mean_of_jacobian() -> weighting.Weighting:
  """Mean weights 1/T on the per-task gradients: the cost of J (and G) alone."""

  def init(tasks):
    del tasks
    return ()

  def update(state, inputs: weighting.WeightingInputs):
    num_tasks = inputs.losses.shape[0]
    return jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32), state

  # needs="grads": J itself is built (a "gram" method on an all-Dense trunk would not build
  # it, `gradients.dense_gram`).
  return weighting.Weighting(init, update, needs="grads", allows_rep=True)


# ----------------------------------------------------------------------------------------------
# What to measure.


def registered_methods() -> list[str]:
  """Every registered method but SKIP, each `make` once (the first name of an alias)."""
  seen, names = set(), []
  for name, make in weighting.REGISTRY.items():
    if name in SKIP or name == JACOBIAN or make in seen:
      continue
    seen.add(make)
    names.append(name)
  return names


def variants(methods: Sequence[str]) -> list[Variant]:
  """Each method in its default mode, gradient methods that allow it also in the rep mode
  (those defined only there, such as ntkmtl_sr, run in it by default), and the LOG_VARIANTS
  on log losses too."""
  out = []
  for name in methods:
    out.append(Variant(name, None))
    method = weighting.get(name, context={"steps_per_epoch": STEPS_PER_EPOCH, "num_steps": 1000})
    if method.needs != "losses" and method.allows_rep and not method.rep_only:
      out.append(Variant(name, "rep"))
    if name in LOG_VARIANTS:
      out.append(Variant(name, None, log_losses=True))
  return out


def model_config(model: str, num_tasks: int, variant: Variant):
  """The run config of `model` with `variant`'s weighting."""
  c = config_lib.default_config()
  if model == "mlp":
    c.model.backbone = ()
    c.model.shared_layers = (256,)
    c.batch_size = 128
  else:
    c.model.backbone = (32, "p", 64, "p", 128)
    c.model.shared_layers = ()
    c.model.global_pooling = "max"
    c.images.imshape = (64, 64)
    c.batch_size = 64
  c.model.task_layers = ()
  c.optimizer.name = "adam"
  c.num_steps = 1000
  c.weighting = variant.method
  if variant.grad_wrt is not None:
    c.weighting_kwargs.grad_wrt = variant.grad_wrt
  if variant.log_losses:
    c.weighting_kwargs.log_losses = True
  del num_tasks
  return c


def make_tasks(num_tasks: int) -> tuple[Task, ...]:
  return tuple(Task(f"task{i}", classes=tuple(range(NUM_CLASSES))) for i in range(num_tasks))


def make_batch(model: str, tasks: Sequence[Task], batch_size: int, seed: int = 0) -> dict:
  """A fixed batch of random inputs and labels (every label present)."""
  rng = np.random.default_rng(seed)
  shape = (batch_size, 784) if model == "mlp" else (batch_size, 64, 64, 3)
  return {"inputs": rng.standard_normal(shape, dtype=np.float32),
          "labels": {t.name: rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
                     for t in tasks}}


# ----------------------------------------------------------------------------------------------
# Compiling and timing one configuration.


class Runner(NamedTuple):
  """A compiled configuration: `run(state) -> state` takes `steps` train steps."""
  run: Callable[[Any], Any]
  state: Any
  steps: int
  temp_bytes: int


def compile_runner(model: str, setup: build.Setup, state, batch: dict, mesh,
                   mlp_steps: int) -> Runner:
  """The library's jitted step for `model`, compiled for `batch` (also the validation split
that a method with `val_batch`, Auto-λ, draws its look-ahead batches from)."""
  val = ()
  if setup.weighting.val_batch:
    val = (jax.device_put(batch, sharding_lib.replicated(mesh)),)
  if model == "mlp":
    fn = train.make_train_fn(setup, mesh, on_device=True)
    source = jax.device_put(batch, sharding_lib.replicated(mesh))
    index = np.tile(np.arange(len(batch["inputs"]), dtype=np.int32), (mlp_steps, 1))
    xs = jax.device_put(index, sharding_lib.batch_sharding(mesh, 1))
    compiled = fn.lower(state, source, xs, *val).compile()
    run = lambda s: compiled(s, source, xs, *val)[0]
    steps = mlp_steps
  else:
    fn = train.make_step_fn(setup, mesh)
    batch = jax.device_put(batch, sharding_lib.batch_sharding(mesh))
    compiled = fn.lower(state, batch, *val).compile()
    run = lambda s: compiled(s, batch, *val)[0]
    steps = 1
  return Runner(run, state, steps, temp_bytes(compiled))


def temp_bytes(compiled) -> int:
  """XLA's temp allocation of a compiled function (-1 if the backend does not say)."""
  analysis = compiled.memory_analysis()
  return -1 if analysis is None else int(analysis.temp_size_in_bytes)


def time_runner(runner: Runner, min_seconds: float) -> tuple[Runner, float]:
  """(runner with its new state, ms per step) over enough dispatches to last `min_seconds`."""
  state, dispatches, start = runner.state, 0, time.perf_counter()
  while True:
    state = runner.run(state)
    jax.block_until_ready(state)
    dispatches += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds:
      break
  return runner._replace(state=state), 1e3 * elapsed / (dispatches * runner.steps)


def trunk_fns(setup: build.Setup, params) -> dict[str, Callable]:
  """({"trunk_forward" | "trunk_backward": fn(trunk params, batch) -> f32[]}, trunk params):
  the shared trunk's forward alone, and its forward plus one VJP to its parameters."""
  owners = models_base.param_owners(setup.model, params, setup.task_names)
  trunk_params, head_params = models_base.split_params(params, owners)

  def trunk(trunk_params, batch):
    return setup.model.apply({"params": models_base.merge_params(trunk_params, head_params)},
                             batch["inputs"], train=True, method="encode")

  def backward(trunk_params, batch):
    rep, vjp = jax.vjp(lambda p: trunk(p, batch), trunk_params)
    (grads,) = vjp(jnp.full(rep.shape, 1e-3, rep.dtype))
    return sum(g.sum() for g in jax.tree.leaves(grads))

  fns = {"trunk_forward": lambda p, b: trunk(p, b).sum(), "trunk_backward": backward}
  return fns, trunk_params


def reference_runners(model: str, setup: build.Setup, state, batch: dict, mesh,
                      mlp_steps: int) -> dict[str, Runner]:
  """The trunk's forward and forward + backward, timed like the steps (scan for the MLP)."""
  fns, params = trunk_fns(setup, jax.tree.map(jnp.copy, state.params))
  replicated = sharding_lib.replicated(mesh)
  runners = {}
  for name, fn in fns.items():
    if model == "mlp":

      def run(params, source, xs, fn=fn):
        body = lambda total, x: (total + fn(params, jax.tree.map(lambda a: a[x], source)), None)
        return jax.lax.scan(body, jnp.zeros(()), xs)[0]

      source = jax.device_put(batch, replicated)
      index = np.tile(np.arange(len(batch["inputs"]), dtype=np.int32), (mlp_steps, 1))
      args = (params, source, jax.device_put(index, sharding_lib.batch_sharding(mesh, 1)))
      steps = mlp_steps
    else:
      run = fn
      args = (params, jax.device_put(batch, sharding_lib.batch_sharding(mesh)))
      steps = 1
    compiled = jax.jit(run).lower(*args).compile()
    runners[name] = Runner(lambda s, c=compiled, a=args: c(*a), None, steps, temp_bytes(compiled))
  return runners


# ----------------------------------------------------------------------------------------------
# One (model, T) group.


def build_runner(model: str, num_tasks: int, variant: Variant, mesh,
                 mlp_steps: int) -> Runner:
  """Setup, state and the compiled step of one configuration (ConfigError if refused)."""
  config = config_lib.complete(model_config(model, num_tasks, variant))
  tasks = make_tasks(num_tasks)
  setup = build.build_setup(config, tasks, steps_per_epoch=STEPS_PER_EPOCH)
  batch = make_batch(model, tasks, config.batch_size)
  state = train.create_train_state(setup, config.seed, batch["inputs"][:1], mesh)
  return compile_runner(model, setup, state, batch, mesh, mlp_steps)


def measure_group(model: str, num_tasks: int, chosen: Sequence[Variant], args, mesh) -> dict:
  """{label: (ms per step, temp MiB)} and {label: why skipped} of one (model, T)."""
  prefix = f"{model}/T{num_tasks}"
  runners, skipped = {}, {}
  for variant in chosen:
    start = time.perf_counter()
    try:
      runners[variant.label] = build_runner(model, num_tasks, variant, mesh, args.mlp_steps)
    except ConfigError as e:
      skipped[variant.label] = str(e)
      log(f"{prefix}/{variant.label}: skipped ({e})")
      continue
    log(f"{prefix}/{variant.label}: compiled in {time.perf_counter() - start:.1f} s, "
        f"temp {runners[variant.label].temp_bytes / MIB:.1f} MiB")
  if EQUAL in runners:
    config = config_lib.complete(model_config(model, num_tasks, Variant(EQUAL, None)))
    tasks = make_tasks(num_tasks)
    setup = build.build_setup(config, tasks)
    runners.update(reference_runners(model, setup, runners[EQUAL].state,
                                     make_batch(model, tasks, config.batch_size), mesh,
                                     args.mlp_steps))
  for label, runner in runners.items():  # warm-up
    runners[label], _ = time_runner(runner, 0.0)
  samples = {label: [] for label in runners}
  for round_index in range(args.repeats):
    for label, runner in runners.items():
      runners[label], ms = time_runner(runner, args.min_seconds)
      samples[label].append(ms)
    log(f"{prefix}: round {round_index + 1}/{args.repeats} done")
  results = {label: (statistics.median(ms), runners[label].temp_bytes / MIB)
             for label, ms in samples.items()}
  for label, (ms, mib) in results.items():
    log(f"{prefix}/{label}: {ms:.3f} ms/step (samples {', '.join(f'{m:.3f}' for m in samples[label])}), "
        f"temp {mib:.1f} MiB")
  return {"results": results, "skipped": skipped}


def group_figures(model: str, num_tasks: int, group: dict) -> dict:
  """The JSON entries of one (model, T) group."""
  prefix = f"{model}/T{num_tasks}"
  results, out = group["results"], {}
  equal_ms = results.get(EQUAL, (None,))[0]
  for label, (ms, mib) in results.items():
    out[f"{prefix}/{label}"] = round(ms, 4)
    if label not in REFERENCES:
      out[f"temp_mib/{prefix}/{label}"] = round(mib, 2)
    if equal_ms:
      out[f"ratio/{prefix}/{label}"] = round(ms / equal_ms, 3)
  if all(name in results for name in REFERENCES):
    forward_ms = results["trunk_forward"][0]
    b = max(results["trunk_backward"][0] - forward_ms, 0.0) / forward_ms
    out[f"floor/{prefix}"] = round((1 + num_tasks * b) / (1 + b), 3)
  for label, why in group["skipped"].items():
    out[f"skipped/{prefix}/{label}"] = why
  return out


def log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="the JSON file to write")
  parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: mlp,cnn")
  parser.add_argument("--tasks", default="2,4,8", help="comma-separated task counts")
  parser.add_argument("--methods", default="",
                      help="comma-separated method names (default: all); equal and jacobian "
                           "are always added; a name/rep entry measures only that mode")
  parser.add_argument("--repeats", type=int, default=3, help="timing rounds (median)")
  parser.add_argument("--min_seconds", type=float, default=0.3,
                      help="each timing lasts at least this long (whole dispatches)")
  parser.add_argument("--mlp_steps", type=int, default=50, help="MLP steps per dispatch")
  parser.add_argument("--append", action="store_true", help="merge into an existing --out")
  return parser.parse_args(argv)


def chosen_variants(spec: str) -> list[Variant]:
  """The variants the --methods flag names (all when empty), equal and jacobian first."""
  names = [s.strip() for s in spec.split(",") if s.strip()]
  base = [EQUAL, JACOBIAN]
  if not names:
    return variants(base + [m for m in registered_methods() if m != EQUAL])
  plain = list(dict.fromkeys(n.removesuffix("/rep").removesuffix(LOG) for n in names))
  out = variants(base + [n for n in plain if n not in base])
  out += [v for v in (Variant(n.removesuffix(LOG), None, True) for n in names if n.endswith(LOG))
          if v not in out]  # "<name>+log" of a method outside LOG_VARIANTS
  wanted = set(names) | {EQUAL, JACOBIAN, JACOBIAN + "/rep"}
  return [v for v in out if v.label in wanted
          or (v.grad_wrt is None and not v.log_losses and v.method in wanted)]


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  weighting.REGISTRY[JACOBIAN] = make_mean_of_jacobian
  mesh = sharding_lib.make_mesh()
  chosen = chosen_variants(args.methods)
  figures = {}
  if args.append and os.path.exists(args.out):
    with open(args.out, encoding="utf-8") as f:
      figures = json.load(f)
  load = [os.getloadavg()[0]]
  log(f"{len(chosen)} configurations per group: {', '.join(v.label for v in chosen)}; "
      f"load {load[0]:.2f}")
  for model in args.models.split(","):
    for num_tasks in (int(t) for t in args.tasks.split(",")):
      group = measure_group(model, num_tasks, chosen, args, mesh)
      figures.update(group_figures(model, num_tasks, group))
      load.append(os.getloadavg()[0])
      figures.setdefault("load", {})[f"{model}/T{num_tasks}"] = [load[-2], load[-1]]
      atomic.write_json(args.out, figures)
  log(f"wrote {args.out}; load {load[0]:.2f} -> {load[-1]:.2f}")


if __name__ == "__main__":
  cpu_tuning.apply()  # the script owns its process: before JAX starts its backend
  main()
