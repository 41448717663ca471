"""Train-step throughput of the patchwork-shaped convnet: mtl_jax's step against PyTorch.

    flock /tmp/bench.lock python experiments/bench_cnn.py --out /tmp/bench_cnn.json \
        [--rounds 7] [--steps 20] [--ablations]

(`experiments/bench_step.py` runs it too, after its MLP.) The model: 64x64x3 inputs,
conv32-p-conv64-p-conv128 (3x3 convs, ReLU, same padding; "p" a 2x2 max pool with stride 2),
two heads that max-pool globally and end in a Dense of 10 (task "a") and 2 classes (task "b");
loss CE_a + CE_b, batch 64, Adam (learning rate 1e-3), random inputs uniform in [0, 1) and
random labels, four batches made once and cycled. Loops:

* `cnn/jax`: mtl_jax's training path as `MultiTaskTrainer` runs it: the spec-built
  `HardParameterSharing` model (`build.build_setup`), `train.create_train_state`, and
  `train.make_step_fn`, one jitted step per dispatch as `train.dispatches` calls it, on
  batches already on the device. The worker calls `mtl_jax.cpu_tuning.apply()` before JAX
  starts, as `python -m mtl_jax.main` does, so the CPU tuning is on unless
  `MTL_JAX_CPU_TUNING=0` is in the environment.
* `cnn/torch`: the same model in PyTorch, channels_last, a plain training loop, default threads.
* `cnn/torch_tuned`: the same loop in a process whose glibc allocator is set as
  `mtl_jax.cpu_tuning.tune_malloc` sets it (`M_MMAP_MAX` 0, `M_TRIM_THRESHOLD` 1 GiB,
  `M_ARENA_MAX` 1).

Each loop lives in its own worker process (so one's allocator settings never reach another),
compiled and warmed up once; each round asks the workers one at a time (the order rotates)
for `--steps` timed steps. Figures are medians over `--rounds` rounds, in images per second;
`cnn/ratio` is the JAX median over the torch median, `cnn/ratio_tuned` over the torch_tuned
median (above 1: JAX is faster). `--ablations` adds workers under
`cnn/ablation/<name>/images_per_s`: JAX without each optimisation (`untuned`: no flag, no
allocator settings; `no_flag`; `no_malloc`; `no_arena`: without `M_ARENA_MAX`; `flax_pool`:
`nn.max_pool`), and `torch_mmap_trim`, PyTorch with only the first two
allocator settings. Per-round figures and the load average go to stderr; rounds far apart
mean a busy machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

IMAGE_SHAPE = (64, 64, 3)
SPEC = (32, "p", 64, "p", 128)
CLASSES = {"a": 10, "b": 2}
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
WARMUP_STEPS = 10   # untimed steps per worker, after compilation
NUM_BATCHES = 4     # distinct random batches each loop cycles through
READY = "ready"


# ----------------------------------------------------------------------------------------------
# mtl_jax.


def jax_config():
  """The trainer's configuration of this model: backbone spec, no shared or head layers."""
  import mtl_jax  # pylint: disable=import-outside-toplevel

  c = mtl_jax.default_config()
  c.model.backbone = SPEC
  c.model.shared_layers = ()
  c.model.task_layers = ()
  c.model.global_pooling = "max"
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = LEARNING_RATE
  c.optimizer.schedule = "constant"
  c.batch_size = BATCH_SIZE
  return c


class FlaxPoolBackbone:
  """The spec's backbone written with flax's `nn.max_pool` (the ablation of `max_pool_2x2`)."""

  @staticmethod
  def make():
    import flax.linen as nn  # pylint: disable=import-outside-toplevel

    class Backbone(nn.Module):

      @nn.compact
      def __call__(self, x):
        for i, item in enumerate(SPEC):
          if item == "p":
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
          else:
            x = nn.relu(nn.Conv(item, (3, 3), padding="SAME", name=f"conv_{i}")(x))
        return x

    return Backbone()


def cnn_tasks():
  """Task "a" of 10 classes and task "b" of 2."""
  from mtl_jax.tasks import Task  # pylint: disable=import-outside-toplevel

  return tuple(Task(name, classes=tuple(range(n))) for name, n in CLASSES.items())


def jax_loop(pool: str = "library", image_shape: tuple[int, ...] = IMAGE_SHAPE, tasks=None):
  """run(steps) -> seconds for `steps` steps of mtl_jax's train step, compiled and warm.

  Args:
    pool: "library" (the spec's "p") or "flax" (`nn.max_pool` in a user backbone).
    image_shape: [H, W, C] of the inputs.
    tasks: the heads' tasks (default `cnn_tasks()`).
  """
  import jax  # pylint: disable=import-outside-toplevel
  from mtl_jax import build, sharding, train  # pylint: disable=import-outside-toplevel

  tasks = cnn_tasks() if tasks is None else tuple(tasks)
  backbone = FlaxPoolBackbone.make() if pool == "flax" else None
  setup = build.build_setup(jax_config(), tasks, backbone=backbone)
  mesh = sharding.make_mesh()
  state = train.create_train_state(setup, 0, np.zeros((1, *image_shape), np.float32), mesh)
  step_fn = train.make_step_fn(setup, mesh)
  batches = [jax.device_put(b, sharding.batch_sharding(mesh))
             for b in random_batches(image_shape, tasks)]

  def run(steps: int) -> float:
    nonlocal state
    start = time.perf_counter()
    for i in range(steps):
      state, losses = step_fn(state, batches[i % NUM_BATCHES])
    jax.block_until_ready((state, losses))
    return time.perf_counter() - start

  return run


def random_batches(image_shape: tuple[int, ...] = IMAGE_SHAPE, tasks=None,
                   seed: int = 0) -> list[dict]:
  """NUM_BATCHES batches {"inputs": f32[B, *image_shape] in [0, 1), "labels": {task: [B]}}:
  random classes (i32) or standard normal targets (f32, regression)."""
  rng = np.random.default_rng(seed)
  tasks = cnn_tasks() if tasks is None else tasks

  def labels(task):
    if task.is_classification:
      return rng.integers(0, len(task.classes), BATCH_SIZE).astype(np.int32)
    return rng.normal(size=BATCH_SIZE).astype(np.float32)

  return [{"inputs": rng.random((BATCH_SIZE, *image_shape), dtype=np.float32),
           "labels": {t.name: labels(t) for t in tasks}} for _ in range(NUM_BATCHES)]


# ----------------------------------------------------------------------------------------------
# PyTorch.


def torch_loop():
  """run(steps) -> seconds for `steps` Adam steps of the model in PyTorch, channels_last."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  class ConvNet(nn.Module):

    def __init__(self):
      super().__init__()
      layers, channels = [], IMAGE_SHAPE[-1]
      for item in SPEC:
        if item == "p":
          layers.append(nn.MaxPool2d(2, 2))
        else:
          layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
          channels = item
      self.trunk = nn.Sequential(*layers)
      self.heads = nn.ModuleList(nn.Linear(channels, n) for n in CLASSES.values())

    def forward(self, x):
      rep = self.trunk(x).amax(dim=(2, 3))
      return [head(rep) for head in self.heads]

  model = ConvNet().to(memory_format=torch.channels_last)
  optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
  batches = [(torch.from_numpy(b["inputs"]).permute(0, 3, 1, 2).contiguous(
                  memory_format=torch.channels_last),
              [torch.from_numpy(b["labels"][t]).long() for t in CLASSES])
             for b in random_batches()]

  def step(x, ys):
    optimizer.zero_grad()
    loss = sum(F.cross_entropy(out, y) for out, y in zip(model(x), ys))
    loss.backward()
    optimizer.step()

  def run(steps: int) -> float:
    start = time.perf_counter()
    for i in range(steps):
      step(*batches[i % NUM_BATCHES])
    return time.perf_counter() - start

  return run


def library_cpu_tuning():
  """`mtl_jax/cpu_tuning.py` loaded alone: the torch workers must not import JAX."""
  package = importlib.util.find_spec("mtl_jax")
  path = os.path.join(package.submodule_search_locations[0], "cpu_tuning.py")
  spec = importlib.util.spec_from_file_location("_cpu_tuning", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def tune_malloc(which: str) -> bool:
  """The library's allocator settings ("library"), or its first two alone ("mmap_trim")."""
  tuning = library_cpu_tuning()
  if which == "library":
    return tuning.tune_malloc()
  import ctypes  # pylint: disable=import-outside-toplevel
  mallopt = ctypes.CDLL(None).mallopt
  return (mallopt(tuning.M_MMAP_MAX, 0) == 1
          and mallopt(tuning.M_TRIM_THRESHOLD, tuning.TRIM_THRESHOLD_BYTES) == 1)


# ----------------------------------------------------------------------------------------------
# Workers: one process per loop, driven over stdin/stdout.

# name -> (worker arguments, environment added); the first three are the benchmark.
WORKERS = {
    "jax": (["jax"], {}),
    "torch": (["torch"], {}),
    "torch_tuned": (["torch", "--malloc", "library"], {}),
}
_FLAG = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"}
_OFF = {"MTL_JAX_CPU_TUNING": "0"}
ABLATIONS = {
    "untuned": (["jax"], _OFF),
    "no_flag": (["jax", "--malloc", "library"], _OFF),
    "no_malloc": (["jax"], {**_OFF, **_FLAG}),
    "no_arena": (["jax", "--malloc", "mmap_trim"], {**_OFF, **_FLAG}),
    "flax_pool": (["jax", "--pool", "flax"], {}),
    "torch_mmap_trim": (["torch", "--malloc", "mmap_trim"], {}),
}


def worker_main(argv) -> None:
  """Builds one loop, warms it up, prints READY, then answers each line "N" with the seconds
  of N timed steps."""
  parser = argparse.ArgumentParser()
  parser.add_argument("kind", choices=("jax", "torch"))
  parser.add_argument("--malloc", default="", choices=("", "library", "mmap_trim"),
                      help="glibc allocator settings: the library's, or only M_MMAP_MAX and "
                           "M_TRIM_THRESHOLD")
  parser.add_argument("--pool", default="library", choices=("library", "flax"))
  args = parser.parse_args(argv)
  if args.kind == "jax":  # as an entry point does, before JAX starts its backend
    from mtl_jax import cpu_tuning  # pylint: disable=import-outside-toplevel
    cpu_tuning.apply()  # a no-op under MTL_JAX_CPU_TUNING=0 (the ablations)
  if args.malloc and not tune_malloc(args.malloc):
    raise SystemExit("the allocator settings need glibc")
  run = torch_loop() if args.kind == "torch" else jax_loop(args.pool)
  run(WARMUP_STEPS)
  print(READY, flush=True)
  for line in sys.stdin:
    print(repr(run(int(line))), flush=True)


def fresh_environ() -> dict[str, str]:
  """This environment without the XLA flag `cpu_tuning.apply` may have added to it here
  (`bench_step.py` applies it in its own process), so each worker's own `apply` decides."""
  environ = dict(os.environ)
  flags = environ.get("XLA_FLAGS", "").replace(library_cpu_tuning().YNN_SETTING, "").strip()
  environ.pop("XLA_FLAGS", None)
  return {**environ, **({"XLA_FLAGS": flags} if flags else {})}


class Worker:
  """A worker process: `time(steps)` -> images per second."""

  def __init__(self, args: list[str], env: dict[str, str]):
    self.process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", *args],
        env={**fresh_environ(), **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    line = self.process.stdout.readline().strip()
    if line != READY:
      self.close()
      raise RuntimeError(f"worker {args} failed to start (exit code {self.process.returncode})")

  def images_per_s(self, steps: int) -> float:
    self.process.stdin.write(f"{steps}\n")
    self.process.stdin.flush()
    return BATCH_SIZE * steps / float(self.process.stdout.readline())

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def summarize(rounds: list[dict[str, float]]) -> dict[str, float]:
  """Medians over rounds, and the ratios of JAX's median to each PyTorch median."""
  out = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
  out["cnn/ratio"] = out["cnn/jax/images_per_s"] / out["cnn/torch/images_per_s"]
  out["cnn/ratio_tuned"] = out["cnn/jax/images_per_s"] / out["cnn/torch_tuned/images_per_s"]
  return out


def key(name: str) -> str:
  return f"cnn/{name}/images_per_s" if name in WORKERS else f"cnn/ablation/{name}/images_per_s"


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", required=True, help="the JSON file of the results")
  parser.add_argument("--rounds", type=int, default=5, help="rounds over the workers (median)")
  parser.add_argument("--steps", type=int, default=40, help="timed steps per worker per round")
  parser.add_argument("--ablations", action="store_true",
                      help="also time JAX without each optimisation")
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.steps < 1:
    parser.error("--rounds and --steps must be positive")
  return args


def bench(rounds: int, steps: int, ablations: bool = False) -> dict[str, float]:
  """The medians of the module docstring over `rounds` rounds of `steps` steps per worker."""
  specs = {**WORKERS, **(ABLATIONS if ablations else {})}
  start = time.perf_counter()
  workers = {}
  try:
    for name, (worker_args, env) in specs.items():
      workers[name] = Worker(worker_args, env)
    results = []
    names = list(workers)
    for i in range(rounds):
      order = names[i % len(names):] + names[:i % len(names)]  # each worker leads in turn
      result = {key(name): workers[name].images_per_s(steps) for name in order}
      results.append(result)
      print(f"cnn round {i + 1}/{rounds}: " + ", ".join(
          f"{name} {result[key(name)]:,.0f}" for name in names), file=sys.stderr, flush=True)
  finally:
    for w in workers.values():
      w.close()
  print(f"cnn: {rounds} rounds of {steps} steps in {time.perf_counter() - start:.0f} s",
        file=sys.stderr)
  return summarize(results)


def main(argv=None) -> dict[str, float]:
  args = parse_args(argv)
  print(f"load average at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        file=sys.stderr, flush=True)
  out = bench(args.rounds, args.steps, args.ablations)
  print(f"load average at the end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
  from mtl_jax import atomic  # pylint: disable=import-outside-toplevel

  atomic.write_json(args.out, out)
  print(json.dumps(out, indent=2))
  return out


if __name__ == "__main__":
  if sys.argv[1:2] == ["--worker"]:
    worker_main(sys.argv[2:])
  else:
    main()
