"""Train-step throughput of the seed-style MLP and of a convnet: mtl_jax against PyTorch.

    python experiments/bench_step.py --out /tmp/bench_step.json [--rounds 5] [--steps 3000] \
        [--cnn-rounds 7] [--cnn-steps 20]

The model is the course notebook's: 784 inputs, one shared Dense(100) + ReLU, one linear head
of 10 classes (task "a") and one of 2 classes (task "b"), loss CE_a + CE_b, batch 128, SGD
with Nesterov momentum 0.9, weight decay 5e-4 and a constant learning rate of 0.01, on random
data (`--examples` inputs uniform in [0, 1), random labels). Three loops train it:

* `mlp/jax`: `mtl_jax.train_and_evaluate` itself, with `from_arrays` data kept on the device
  and `steps_per_dispatch` steps per jit call (a `lax.scan` over device-side batch indices).
  Its throughput is the loop's own meter, the `train/steps_per_s` it logs every `log_every`
  steps; the first window, which holds the compilation, is dropped and the others are pooled
  (steps over seconds). Evaluation and checkpoints happen only at the end of the run, outside
  the windows.
* `mlp/torch_loader`: the course-notebook loop, a `DataLoader` over a `TensorDataset` with
  `shuffle=True` (default workers and threads).
* `mlp/torch`: a tuned PyTorch loop drawing each batch by tensor indexing with a slice of a
  random permutation.

Each round runs the three loops one after the other (JAX, loader, tuned), each for `--steps`
timed steps after a warm-up (JAX: rounded up to whole log windows); the figures are medians
over `--rounds` rounds, in training examples per second. `mlp/ratio` is the JAX median over
the loader median, `mlp/ratio_tuned` the JAX median over the tuned median: above 1 the JAX
loop is faster. Every loop uses its framework's default threads on one device, so the figures
compare whole training loops on the same hardware, not kernels. The script calls
`mtl_jax.cpu_tuning.apply()` first, as `python -m mtl_jax.main` does (`MTL_JAX_CPU_TUNING=0`
turns it off); its allocator settings are process-wide, so the PyTorch MLP loops, which run in
the same process, get them too.

Reading the figures: the per-round figures and the load average at the start and the end go
to stderr. Run it on an otherwise idle machine. On shared cores PyTorch suffers far more than
XLA (its OpenMP workers wait on each other at every op), so contention inflates both ratios;
rounds that disagree by more than ~20% mean the machine was busy, and the run should be
repeated.

The convnet (`cnn/*` keys: `cnn/jax/images_per_s`, `cnn/torch/images_per_s`, `cnn/ratio`,
`cnn/torch_tuned/images_per_s`, `cnn/ratio_tuned`) runs after the MLP rounds: the benchmark of
`experiments/bench_cnn.py` (64x64x3 inputs, conv32-p-conv64-p-conv128, two max-pooled heads,
batch 64, Adam; mtl_jax's image train step against PyTorch channels_last, with and without
the library's allocator settings), `--cnn-rounds` rounds of `--cnn-steps` steps per loop;
`--cnn-steps 0` skips it. That file describes its loops and ablations.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable

import numpy as np

import bench_cnn  # experiments/bench_cnn.py: the convnet benchmark

INPUTS, HIDDEN, CLASSES_A, CLASSES_B = 784, 100, 10, 2
BATCH_SIZE = 128
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
WARMUP_STEPS = 50  # untimed steps of each PyTorch loop per round
EVAL_EXAMPLES = 512  # the val and test splits of the JAX run: small, evaluated once at the end

def make_data(num_examples: int, seed: int) -> dict[str, np.ndarray]:
  """Random inputs f32[N, 784] in [0, 1) and labels i64[N] for tasks "a" and "b"."""
  rng = np.random.default_rng(seed)
  return {"x": rng.random((num_examples, INPUTS), dtype=np.float32),
          "a": rng.integers(0, CLASSES_A, num_examples),
          "b": rng.integers(0, CLASSES_B, num_examples)}


# ----------------------------------------------------------------------------------------------
# mtl_jax.


def jax_config(num_steps: int, log_every: int, steps_per_dispatch: int):
  """The MLP run: logs every `log_every` steps, evaluates and checkpoints only at the end."""
  import mtl_jax  # pylint: disable=import-outside-toplevel

  c = mtl_jax.default_config()
  c.model.backbone = (HIDDEN,)
  c.model.shared_layers = ()
  c.model.task_layers = ()  # each head is one Dense of the task's classes
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = LEARNING_RATE
  c.optimizer.momentum = MOMENTUM
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = WEIGHT_DECAY
  c.optimizer.schedule = "constant"
  c.batch_size = BATCH_SIZE
  c.num_steps = num_steps
  c.steps_per_dispatch = steps_per_dispatch
  c.log_every = log_every
  c.eval_every = c.checkpoint_every = num_steps
  c.keep_checkpoints = 1
  return c


def jax_dataset(data: dict[str, np.ndarray], seed: int):
  """`data` as the training split of an mtl_jax Dataset, with small random val/test splits."""
  import mtl_jax  # pylint: disable=import-outside-toplevel

  held_out = make_data(EVAL_EXAMPLES, seed + 1)
  pair = (held_out["x"], {"a": held_out["a"], "b": held_out["b"]})
  return mtl_jax.from_arrays(data["x"], {"a": data["a"], "b": data["b"]}, val=pair, test=pair)


def logged_rates(workdir: str) -> list[tuple[int, float]]:
  """(step, steps/s) of every `train/steps_per_s` the loop wrote to TensorBoard, in order."""
  from mtl_jax import events  # pylint: disable=import-outside-toplevel
  return sorted(events.read_scalars(workdir)["train/steps_per_s"].items())


def steady_samples_per_s(rates: list[tuple[int, float]], batch_size: int) -> float:
  """Examples/s over every logged window but the first (which holds the compilation)."""
  if len(rates) < 2:
    raise ValueError(f"need at least two logged windows, got {rates}")
  steps = [step - prev for (prev, _), (step, _) in zip(rates, rates[1:])]
  seconds = [n / rate for n, (_, rate) in zip(steps, rates[1:])]
  return batch_size * sum(steps) / sum(seconds)


def time_jax(dataset, steps: int, window: int, steps_per_dispatch: int) -> float:
  """Examples/s of `train_and_evaluate` over `steps` steady steps after one warm-up window."""
  import mtl_jax  # pylint: disable=import-outside-toplevel

  config = jax_config(window + steps, window, steps_per_dispatch)
  with tempfile.TemporaryDirectory(prefix="bench_step_") as workdir:
    with contextlib.redirect_stdout(io.StringIO()):  # the run's progress lines
      mtl_jax.train_and_evaluate(config, workdir, data=dataset)
    return steady_samples_per_s(logged_rates(workdir), BATCH_SIZE)


# ----------------------------------------------------------------------------------------------
# PyTorch.


def torch_model():
  """The same MLP in PyTorch: (logits_a, logits_b) from one shared Linear + ReLU."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel

  class MLP(nn.Module):

    def __init__(self):
      super().__init__()
      self.shared = nn.Sequential(nn.Linear(INPUTS, HIDDEN), nn.ReLU())
      self.head_a = nn.Linear(HIDDEN, CLASSES_A)
      self.head_b = nn.Linear(HIDDEN, CLASSES_B)

    def forward(self, x):
      h = self.shared(x)
      return self.head_a(h), self.head_b(h)

  model = MLP()
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM,
                              nesterov=True, weight_decay=WEIGHT_DECAY)
  return model, optimizer


def torch_step_fn(model, optimizer) -> Callable:
  """step(x, y_a, y_b): one SGD step on CE_a + CE_b."""
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  def step(x, y_a, y_b):
    optimizer.zero_grad()
    logits_a, logits_b = model(x)
    loss = F.cross_entropy(logits_a, y_a) + F.cross_entropy(logits_b, y_b)
    loss.backward()
    optimizer.step()

  return step


def loader_batches(tensors):
  """The notebook way: endless epochs of a shuffled DataLoader over a TensorDataset."""
  from torch.utils.data import DataLoader, TensorDataset  # pylint: disable=import-outside-toplevel

  loader = DataLoader(TensorDataset(*tensors), batch_size=BATCH_SIZE, shuffle=True)
  while True:
    yield from loader


def indexed_batches(tensors):
  """The tuned way: endless epochs of batches indexed by slices of a random permutation."""
  import torch  # pylint: disable=import-outside-toplevel

  n = len(tensors[0])
  while True:
    perm = torch.randperm(n)
    for start in range(0, n - BATCH_SIZE + 1, BATCH_SIZE):
      index = perm[start:start + BATCH_SIZE]
      yield tuple(t[index] for t in tensors)


def time_torch(batches, steps: int) -> float:
  """Examples/s of a fresh model trained on `batches` for `steps` steps after a warm-up."""
  step = torch_step_fn(*torch_model())
  for _ in range(WARMUP_STEPS):
    step(*next(batches))
  start = time.perf_counter()
  for _ in range(steps):
    step(*next(batches))
  return BATCH_SIZE * steps / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------
# The benchmark.


def summarize(rounds: list[dict[str, float]]) -> dict[str, float]:
  """Medians over the rounds and the two ratios of the JAX median to each PyTorch median."""
  keys = ("mlp/jax/samples_per_s", "mlp/torch_loader/samples_per_s", "mlp/torch/samples_per_s")
  out = {k: statistics.median(r[k] for r in rounds) for k in keys}
  out["mlp/ratio"] = out[keys[0]] / out[keys[1]]
  out["mlp/ratio_tuned"] = out[keys[0]] / out[keys[2]]
  return out


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", required=True, help="the JSON file of the results")
  parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
  parser.add_argument("--steps", type=int, default=3000, help="timed steps per loop per round")
  parser.add_argument("--examples", type=int, default=60_000, help="random training examples")
  parser.add_argument("--steps-per-dispatch", type=int, default=None,
                      help="mtl_jax config.steps_per_dispatch (default: the library's)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--cnn-rounds", type=int, default=7, help="convnet rounds (median)")
  parser.add_argument("--cnn-steps", type=int, default=20,
                      help="timed convnet steps per loop per round; 0 skips the convnet")
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.steps < 1 or args.examples < BATCH_SIZE:
    parser.error("--rounds and --steps must be positive, --examples at least one batch")
  if args.cnn_rounds < 1 or args.cnn_steps < 0:
    parser.error("--cnn-rounds must be positive, --cnn-steps at least 0")
  return args


def main(argv=None) -> dict[str, float]:
  args = parse_args(argv)
  import mtl_jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  torch.manual_seed(args.seed)
  steps_per_dispatch = args.steps_per_dispatch or mtl_jax.default_config().steps_per_dispatch
  # Whole dispatches per log window, so every dispatch has the same length (one compilation).
  window = max(1, 500 // steps_per_dispatch) * steps_per_dispatch
  steps = -(-args.steps // window) * window
  data = make_data(args.examples, args.seed)
  dataset = jax_dataset(data, args.seed)
  tensors = tuple(torch.from_numpy(data[k]) for k in ("x", "a", "b"))
  loaders = {"torch_loader": loader_batches(tensors), "torch": indexed_batches(tensors)}

  print(f"load average at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        file=sys.stderr, flush=True)
  start = time.perf_counter()
  rounds = []
  for i in range(args.rounds):
    result = {"mlp/jax/samples_per_s": time_jax(dataset, steps, window, steps_per_dispatch)}
    for name, batches in loaders.items():
      result[f"mlp/{name}/samples_per_s"] = time_torch(batches, args.steps)
    rounds.append(result)
    print(f"round {i + 1}/{args.rounds}: " + ", ".join(
        f"{k.split('/')[1]} {v:,.0f}" for k, v in result.items()), file=sys.stderr, flush=True)
  out = summarize(rounds)
  if args.cnn_steps:
    out.update(bench_cnn.bench(args.cnn_rounds, args.cnn_steps))
  print(f"{args.rounds} rounds in {time.perf_counter() - start:.0f} s; JAX: {steps} steps in "
        f"windows of {window}, steps_per_dispatch {steps_per_dispatch}; load average at the end: "
        f"{os.getloadavg()[0]:.2f}", file=sys.stderr)
  from mtl_jax import atomic  # pylint: disable=import-outside-toplevel

  atomic.write_json(args.out, out)
  print(json.dumps(out, indent=2))
  return out


if __name__ == "__main__":
  # The script owns its process: quiet TensorFlow (imported by train_and_evaluate's metric
  # writer) and tune the CPU before JAX starts its backend.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from mtl_jax import cpu_tuning  # pylint: disable=g-import-not-at-top
  cpu_tuning.apply()
  main()
