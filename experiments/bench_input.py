"""Does the image-file input pipeline keep up with the train step? Images/s of each, per size.

    flock /tmp/bench.lock python experiments/bench_input.py --out /tmp/bench_input.json \
        [--sizes 64,128] [--workers 2] [--rounds 3] [--batches 30]

For each image size S (default 64 and 128) the script draws PNGs with `mj.data.make_shapes`
(`--images` of them, drawn at S x S) into a temporary directory and times three things in
images per second:

* `input/S`: the file pipeline alone, as `MultiTaskTrainer` runs it on files that are not in
  its decode cache: `mtl_jax.data.image_batches` over the train CSV's files in the balanced
  sampler's order, each batch decoded (PNG), resized to S x S and stacked by `--workers`
  threads (`mtl_jax.data.image_decoder`), batch 64. Nothing consumes the batches but the
  timer.
* `step/S`: mtl_jax's train step alone (`train.make_step_fn`, one step per dispatch) on random
  batches already on the device, for the convnet of `experiments/bench_cnn.py`
  (conv32-p-conv64-p-conv128, max-pooled heads, Adam) at S x S x 3, with one head per
  make_shapes task (shape, color, size, and x by regression).
* `train/S`: both together, as a training epoch runs them: the pipeline's batches sent to the
  device (`sharding.put_global`) and fed to the step. The pipeline's threads and the step share
  the CPU cores, so this is the rate a trainer sees.

`input/S/step_ratio` is input over step: above 1 the pipeline alone outruns the step. Each
figure is the median over `--rounds` rounds (the three timed one after the other per round,
after one untimed warm-up batch each); per-round figures go to stderr. The script calls
`mtl_jax.cpu_tuning.apply()` first, as `python -m mtl_jax.main` does, so the CPU tuning is on
unless `MTL_JAX_CPU_TUNING=0`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Iterator

import numpy as np

import bench_cnn  # experiments/bench_cnn.py: the convnet and its step

BATCH_SIZE = bench_cnn.BATCH_SIZE
CHANNELS = 3
ENDLESS = 1 << 30  # steps a pipeline is built for; the timers take what they need


def shapes_files(directory: str, num_images: int, size: int):
  """(paths [N], encoded labels {task: [N]}, tasks) of `num_images` make_shapes PNGs at size."""
  import pandas as pd  # pylint: disable=import-outside-toplevel
  import mtl_jax as mj  # pylint: disable=import-outside-toplevel

  train_csv, val_csv = mj.data.make_shapes(directory, num_images, imshape=(size, size))
  train, val = pd.read_csv(train_csv), pd.read_csv(val_csv)
  names = list(mj.data.shapes.TASKS)
  tasks = mj.data.infer_tasks(train, val, names, mj.data.shapes.TASK_TYPES)
  return train["filepath"].to_numpy(), mj.data.encode_frame(train, tasks), tasks


def pipeline(paths, labels, tasks, size: int, num_workers: int,
             seed: int) -> Callable[[], Iterator[dict]]:
  """new() -> an endless iterator of local batches from a fresh `image_batches` pipeline."""
  import mtl_jax as mj  # pylint: disable=import-outside-toplevel

  probabilities = mj.data.balanced_probabilities(mj.data.labelled_masks(tasks, labels))
  sampler = mj.data.Sampler(len(paths), BATCH_SIZE, seed, probabilities=probabilities)
  decode = mj.data.image_decoder((size, size), CHANNELS)

  def new() -> Iterator[dict]:
    return mj.data.image_batches(paths, labels, sampler, range(ENDLESS), decode,
                                 num_workers=num_workers)

  return new


def time_input(new_batches, num_batches: int) -> float:
  """Images/s of `num_batches` batches of a fresh pipeline, after its first batch."""
  batches = new_batches()
  next(batches)
  start = time.perf_counter()
  for batch in itertools.islice(batches, num_batches):
    assert batch["inputs"].shape[0] == BATCH_SIZE
  return BATCH_SIZE * num_batches / (time.perf_counter() - start)


def time_step(run_steps, num_batches: int) -> float:
  """Images/s of `num_batches` train steps on device-resident batches."""
  return BATCH_SIZE * num_batches / run_steps(num_batches)


def time_train(new_batches, step, num_batches: int) -> float:
  """Images/s of the pipeline feeding the step: host batch -> device -> one train step."""
  import jax  # pylint: disable=import-outside-toplevel

  batches = new_batches()
  step(next(batches))
  jax.block_until_ready(step.state)
  start = time.perf_counter()
  for batch in itertools.islice(batches, num_batches):
    step(batch)
  jax.block_until_ready(step.state)
  return BATCH_SIZE * num_batches / (time.perf_counter() - start)


class FedStep:
  """The convnet's train step fed host batches: `step(local_batch)` as StreamData runs it."""

  def __init__(self, tasks, size: int):
    from mtl_jax import build, sharding, train  # pylint: disable=import-outside-toplevel

    setup = build.build_setup(bench_cnn.jax_config(), tuple(tasks))
    self.mesh = sharding.make_mesh()
    self.sharding = sharding.batch_sharding(self.mesh)
    self.state = train.create_train_state(setup, 0, np.zeros((1, size, size, CHANNELS),
                                                             np.float32), self.mesh)
    self.step_fn = train.make_step_fn(setup, self.mesh)
    self._put = sharding.put_global

  def __call__(self, local: dict) -> None:
    self.state, _ = self.step_fn(self.state, self._put(local, self.sharding))


def bench_size(size: int, args, directory: str) -> list[dict[str, float]]:
  """Per-round figures {"input/S/...", "step/S/...", "train/S/..."} for one image size."""
  paths, labels, tasks = shapes_files(os.path.join(directory, str(size)), args.images, size)
  new_batches = pipeline(paths, labels, tasks, size, args.workers, args.seed)
  run_steps = bench_cnn.jax_loop(image_shape=(size, size, CHANNELS), tasks=tasks)
  run_steps(bench_cnn.WARMUP_STEPS)
  fed = FedStep(tasks, size)
  rounds = []
  for i in range(args.rounds):
    result = {f"input/{size}/images_per_s": time_input(new_batches, args.batches),
              f"step/{size}/images_per_s": time_step(run_steps, args.batches),
              f"train/{size}/images_per_s": time_train(new_batches, fed, args.batches)}
    rounds.append(result)
    print(f"{size}x{size} round {i + 1}/{args.rounds}: " + ", ".join(
        f"{k.split('/')[0]} {v:,.0f}" for k, v in result.items()), file=sys.stderr, flush=True)
  return rounds


def summarize(rounds: list[dict[str, float]], sizes) -> dict[str, float]:
  """Medians over rounds, and input over step per size."""
  out = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
  for size in sizes:
    out[f"input/{size}/step_ratio"] = (out[f"input/{size}/images_per_s"]
                                       / out[f"step/{size}/images_per_s"])
  return out


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", required=True, help="the JSON file of the results")
  parser.add_argument("--sizes", default="64,128", help="image sizes S (S x S), comma-separated")
  parser.add_argument("--workers", type=int, default=2, help="decoding threads")
  parser.add_argument("--images", type=int, default=1000, help="PNG files drawn per size")
  parser.add_argument("--rounds", type=int, default=3, help="rounds (median)")
  parser.add_argument("--batches", type=int, default=30, help="timed batches per figure")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  args.sizes = [int(s) for s in args.sizes.split(",")]
  if min(args.sizes) < 4 or args.workers < 1 or args.rounds < 1 or args.batches < 1:
    parser.error("sizes must be >= 4; --workers, --rounds and --batches positive")
  if args.images < BATCH_SIZE:
    parser.error(f"--images must be at least one batch ({BATCH_SIZE})")
  return args


def main(argv=None) -> dict[str, float]:
  args = parse_args(argv)
  start = time.perf_counter()
  rounds: list[dict[str, float]] = [{} for _ in range(args.rounds)]
  with tempfile.TemporaryDirectory(prefix="bench_input_") as directory:
    for size in args.sizes:
      for merged, result in zip(rounds, bench_size(size, args, directory)):
        merged.update(result)
  out = summarize(rounds, args.sizes)
  print(f"{args.rounds} rounds of {args.batches} batches per figure, {args.workers} workers, "
        f"in {time.perf_counter() - start:.0f} s", file=sys.stderr)
  from mtl_jax import atomic  # pylint: disable=import-outside-toplevel

  atomic.write_json(args.out, out)
  print(json.dumps(out, indent=2))
  return out


if __name__ == "__main__":
  from mtl_jax import cpu_tuning  # pylint: disable=g-import-not-at-top
  cpu_tuning.apply()  # the script owns its process: before JAX starts its backend
  main()
