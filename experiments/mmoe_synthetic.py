"""The MMoE paper's synthetic benchmark: MMoE against OMoE and shared-bottom as the tasks'
correlation falls.

    python experiments/mmoe_synthetic.py --out-dir experiments/results \
        [--correlations 0.0,0.5,0.7,0.9,1.0] [--seeds 3] [--steps 3000] [--alpha-beta-std 0.5]

Ma, Zhao, Yi, Chen, Hong and Chi, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018: the data of section 3.2 and the comparison of its
Figure 4, where (1) every model does better on more correlated tasks, (2) the shared-bottom
model is the worst everywhere, and (3) MMoE's lead over the one-gate MoE (OMoE) grows as the
correlation falls, MMoE changing least with it.

**The data** (section 3.2), two regression tasks whose relatedness is set by p in [-1, 1]:

1. u1, u2 in R^d orthonormal (the QR factor of a d x 2 Gaussian matrix);
2. w1 = c u1,  w2 = c (p u1 + sqrt(1 - p^2) u2)  (so cos(w1, w2) = p);
3. x ~ N(0, I_d);
4. y_i = w_i^T x + sum_{j=1}^{m} sin(alpha_j w_i^T x + beta_j) + eps_i,  eps_i ~ N(0, 0.01),

with d = 100, c = 1, m = 10 (the paper's), alpha_j, beta_j drawn once per data set. One seed
fixes u1, u2, alpha, beta, the inputs and the noise for every p, so the data sets of one seed
differ only in w2 (task y1 is the same across p). `--train-size` examples train (fresh ones,
100k by default, as the paper samples as much data as it needs) and `--test-size` others
measure.

alpha and beta: the paper draws them from N(0, 0.01). Read as a variance (standard deviation
0.1, `--alpha-beta-std 0.1`) the sines vary by about +-0.1 over the data and the labels are
almost linear in x: every model then reaches the noise floor (test MSE ~0.012 after 3000
steps for all three models at every p, MMoE and OMoE equal to 4 digits) and nothing of
Figure 4 shows. The default `--alpha-beta-std 0.5` makes the sines matter; there the findings
appear (2026-11-30, 3 seeds, 3000 steps: final test loss of shared-bottom 0.024 at p = 0
against 0.020 at p = 1, OMoE 0.017 against 0.015, MMoE 0.016 both; MMoE's lead over
shared-bottom 0.008 at p <= 0.5 against 0.005 at p >= 0.9, over OMoE +0.0009 at p <= 0.5
against -0.0006 at p = 1). Trained longer (`--steps 5000`) every model nears the noise floor:
the final losses of shared-bottom no longer depend on p, and the growth of MMoE's lead shows in
the curve loss (over shared-bottom 0.0080 at p = 0 down to 0.0063 at p = 1) and over OMoE
(final +0.0009 down to -0.0007). The label noise is N(0, 0.01) as the paper's (standard
deviation 0.1, `--noise-std`).

**The models**, one step and one optimizer for all: `mmoe` (the library's registered model),
8 experts of one Dense(16)+ReLU layer and a softmax gate per task; OMoE, the paper's one-gate
baseline, the same experts under one gate shared by the tasks (`omoe_model`: a user model on
the library's expert banks, passed as `model=`); the shared-bottom model (`hps`), one shared
Dense(113)+ReLU layer, 113 units so that it has about as many parameters (13.3k) as the MoEs
(14.8k, 14.0k), as usual in reproductions of this experiment. Every tower is Dense(8)+ReLU and
Dense(1). Loss: the sum of the two tasks' MSE (equal weighting); Adam (`--lr`, constant), batch
`--batch-size`, `--steps` steps, the same data order for every model of a seed.

**The run** uses the library's lower-level API: `build.build_setup`, `train.create_train_state`
and `train.make_train_fn` (the jit-compiled `lax.scan` over `--eval-every` steps that
`train_and_evaluate` runs on in-memory data), compiled once per model and reused for every
correlation and seed; between dispatches the test MSE of each task is measured. Output in
`--out-dir`: `mmoe_synthetic.json` (every run's final test and train MSE per task and its test
curve; per model and correlation the mean and standard deviation over seeds of the final test
loss, the mean of the two tasks' MSE, and of the curve loss, that loss averaged over the curve,
the paper's trainability; MMoE's advantage over each baseline, baseline minus MMoE paired by
seed, per correlation, whether it grows as p falls at every step of p, and its value at the
lowest p minus that at the highest) and `mmoe_synthetic.png` (test loss against training steps
for each correlation, as the paper's Figure 4, and the final test loss against p). About one
minute on a 2-core CPU with the defaults (45 runs; 73 s with `--steps 5000` on a busy one).

Not from the paper: the sizes (16-unit experts, 8-unit towers, a 113-unit shared bottom), the
alpha/beta spread above, Adam's learning rate, the batch size, the number of steps and the data
sizes are our choices; the paper averages 200 runs per point, we run `--seeds` (3).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

TASKS = ("y1", "y2")
DIM, SCALE, NUM_SINES = 100, 1.0, 10
MODELS = {
    # name: (registered model or "omoe", shared_layers, kwargs); sizes set by the flags
    "mmoe": ("mmoe", (16,), {"num_experts": 8}),
    "omoe": ("omoe", (16,), {"num_experts": 8}),
    "shared_bottom": ("hps", (113,), {}),
}


def omoe_model(tasks, args):
  """OMoE, the paper's one-gate MoE baseline (its equation 5): MMoE's experts under ONE
  softmax gate shared by the tasks, so every tower reads the same mixture. Not a registered
  architecture: a user model (`model=`) built on the library's expert banks
  (`mtl_jax.models.experts`), the gate shared like the experts."""
  from mtl_jax.models import experts  # pylint: disable=import-outside-toplevel
  from mtl_jax.models.backbones import BACKBONE  # pylint: disable=import-outside-toplevel
  from mtl_jax.models.base import ModelSpec  # pylint: disable=import-outside-toplevel

  class OMoE(experts.MixtureModel):
    num_experts: int = 8
    shared_modules = (BACKBONE, experts.EXPERTS, "gate")

    def _route(self, h, *, train, part):
      gate = experts.softmax_gate(experts.gate_input(h), self.num_experts, name="gate")
      if part == "gates":
        return {"gate": gate}
      z = experts.mix(gate, self.bank(self.num_experts, train=train, name=experts.EXPERTS)(h))
      return {t.name: z for t in self.tasks}

  spec = ModelSpec(shared_layers=(args.expert_units,), task_layers=TOWER)
  return OMoE(**experts.model_fields(tasks, spec), num_experts=args.experts)
TOWER = (8,)


def make_data(p: float, seed: int, num_examples: int, *, alpha_beta_std: float,
              noise_std: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """x f32[N, d] and {"y1", "y2": f32[N]} of section 3.2 with correlation p (module docstring).

  Everything but w2 depends on `seed` alone, so data sets of one seed differ only in p.
  """
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.standard_normal((DIM, 2)))
  u1, u2 = u[:, 0], u[:, 1]
  alpha = rng.normal(0.0, alpha_beta_std, NUM_SINES)
  beta = rng.normal(0.0, alpha_beta_std, NUM_SINES)
  x = rng.standard_normal((num_examples, DIM))
  noise = rng.normal(0.0, noise_std, (2, num_examples))
  w = (SCALE * u1, SCALE * (p * u1 + np.sqrt(max(0.0, 1.0 - p * p)) * u2))
  labels = {}
  for i, (task, w_i) in enumerate(zip(TASKS, w)):
    z = x @ w_i
    labels[task] = (z + np.sin(np.outer(z, alpha) + beta).sum(axis=1) + noise[i]).astype(
        np.float32)
  return x.astype(np.float32), labels


def make_config(model: str, args):
  """The library configuration of one of MODELS."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  import mtl_jax  # pylint: disable=import-outside-toplevel

  name, shared, kwargs = MODELS[model]
  if model == "shared_bottom":
    shared = (args.bottom_units,)
  elif model in ("mmoe", "omoe"):
    shared, kwargs = (args.expert_units,), {"num_experts": args.experts}
  if model == "omoe":   # built by omoe_model, passed as model=
    name, kwargs = "hps", {}
  c = mtl_jax.default_config()
  c.model.name = name
  c.model.kwargs = ml_collections.ConfigDict(kwargs)
  c.model.backbone = ()
  c.model.shared_layers = shared
  c.model.task_layers = TOWER
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = args.lr
  c.optimizer.schedule = "constant"
  c.weighting = "equal"
  c.batch_size = args.batch_size
  c.num_steps = args.steps
  return c


class Trainer:
  """One model's compiled training dispatch and evaluation, reused across data sets."""

  def __init__(self, model: str, args):
    import jax  # pylint: disable=import-outside-toplevel
    from mtl_jax import build, sharding, train  # pylint: disable=import-outside-toplevel
    from mtl_jax.tasks import Task  # pylint: disable=import-outside-toplevel

    self.args, self.jax, self.train = args, jax, train
    tasks = [Task(t, "regression") for t in TASKS]
    user_model = omoe_model(tasks, args) if model == "omoe" else None
    self.setup = build.build_setup(make_config(model, args), tasks, model=user_model)
    self.mesh = sharding.make_mesh(jax.devices()[:1])
    self.replicated = sharding.replicated(self.mesh)
    self.index_sharding = sharding.batch_sharding(self.mesh, 1)
    self.train_fn = train.make_train_fn(self.setup, self.mesh, on_device=True)
    model_ = self.setup.model

    @jax.jit
    def test_mse(params, model_state, x, labels):
      outputs = model_.apply({"params": params, **model_state}, x, train=False)
      return {t: jax.numpy.mean((outputs[t].reshape(-1) - labels[t]) ** 2) for t in TASKS}

    self.test_mse = test_mse
    self.num_params = None

  def run(self, seed: int, train_data, test_data) -> dict[str, Any]:
    """Trains from a fresh init (seed `seed`); the test MSE every `eval_every` steps."""
    jax, args = self.jax, self.args
    x, labels = train_data
    state = self.train.create_train_state(self.setup, seed, x[:1], self.mesh)
    self.num_params = sum(int(p.size) for p in jax.tree.leaves(state.params))
    source = jax.device_put({"inputs": x, "labels": labels}, self.replicated)
    test = jax.device_put(test_data, self.replicated)
    train_eval = jax.device_put((x[:args.test_size], {t: y[:args.test_size]
                                                      for t, y in labels.items()}),
                                self.replicated)
    order = np.random.default_rng(seed + 1_000_003)
    num_batches = len(x) // args.batch_size

    batches = []   # epochs of shuffled batches: i32[steps, B] indices into the split
    while len(batches) < args.steps:
      perm = order.permutation(len(x))[:num_batches * args.batch_size]
      batches.extend(perm.reshape(num_batches, args.batch_size))
    batches = np.stack(batches[:args.steps]).astype(np.int32)
    curve = []

    def measure(step):
      mse = self.test_mse(state.params, state.model_state, *test)
      curve.append({"step": step, **{t: float(v) for t, v in mse.items()}})

    measure(0)
    step = 0
    while step < args.steps:
      k = min(args.eval_every, args.steps - step)
      xs = jax.device_put(batches[step:step + k], self.index_sharding)
      state, summary = self.train_fn(state, source, xs)
      step += k
      if int(summary["bad_step"]) >= 0:
        raise FloatingPointError(f"non-finite loss at step {int(summary['bad_step'])}")
      measure(step)
    train_mse = self.test_mse(state.params, state.model_state, *train_eval)
    return {"test_mse": {t: curve[-1][t] for t in TASKS},
            "train_mse": {t: float(v) for t, v in train_mse.items()},
            "curve": curve}


def final_loss(run: dict) -> float:
  """The final test loss: the mean of the two tasks' test MSE."""
  return statistics.fmean(run["test_mse"].values())


def curve_loss(run: dict) -> float:
  """The test loss averaged over every measurement after step 0 (the area under the curve per
  step: how fast a model gets there, the paper's trainability)."""
  return statistics.fmean(statistics.fmean(c[t] for t in TASKS) for c in run["curve"][1:])


def summarize(runs: list[dict], models, correlations) -> dict[str, Any]:
  """Means and standard deviations over seeds; MMoE's advantage over each baseline per
  correlation (baseline minus MMoE, paired by seed), final and over the curve, and whether it
  grows as p falls."""
  out: dict[str, Any] = {}
  for model in models:
    for p in correlations:
      rs = [r for r in runs if r["model"] == model and r["p"] == p]
      for name, fn in (("test_loss", final_loss), ("curve_loss", curve_loss)):
        out[f"{model}/p={p:g}/{name}_mean"] = statistics.fmean(fn(r) for r in rs)
        out[f"{model}/p={p:g}/{name}_std"] = statistics.pstdev(fn(r) for r in rs)
      for t in TASKS:
        out[f"{model}/p={p:g}/test_mse_{t}_mean"] = statistics.fmean(r["test_mse"][t]
                                                                     for r in rs)
  if "mmoe" not in models:
    return out
  for base in (m for m in models if m != "mmoe"):
    for name, fn in (("test_loss", final_loss), ("curve_loss", curve_loss)):
      advantage = {}
      for p in correlations:
        mine = {r["seed"]: fn(r) for r in runs if r["model"] == "mmoe" and r["p"] == p}
        theirs = {r["seed"]: fn(r) for r in runs if r["model"] == base and r["p"] == p}
        advantage[p] = statistics.fmean(theirs[s] - mine[s] for s in mine)
        out[f"advantage_over_{base}/{name}/p={p:g}"] = advantage[p]
      ordered = [advantage[p] for p in sorted(correlations)]   # ascending p
      out[f"advantage_over_{base}/{name}/grows_as_p_falls"] = all(
          a >= b for a, b in zip(ordered, ordered[1:]))
      out[f"advantage_over_{base}/{name}/lowest_minus_highest_p"] = ordered[0] - ordered[-1]
  return out


def plot(runs: list[dict], models, correlations, path: str) -> None:
  """Figure 4 style: test loss against steps per correlation; final test loss against p."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  colors = {"mmoe": "tab:red", "omoe": "tab:green", "shared_bottom": "tab:blue"}
  labels = {"mmoe": "MMoE", "omoe": "OMoE (one gate)", "shared_bottom": "shared-bottom"}
  n = len(correlations)
  fig, axes = plt.subplots(1, n + 1, figsize=(3.2 * (n + 1), 3.2))
  for ax in axes[1:n]:
    ax.sharey(axes[0])
  for ax, p in zip(axes, correlations):
    for model in models:
      curves = [r["curve"] for r in runs if r["model"] == model and r["p"] == p]
      steps = [c["step"] for c in curves[0]]
      losses = np.array([[statistics.fmean(c[t] for t in TASKS) for c in curve]
                         for curve in curves])
      ax.plot(steps[1:], losses.mean(0)[1:], color=colors[model], label=labels[model])
      ax.fill_between(steps[1:], losses.min(0)[1:], losses.max(0)[1:], color=colors[model],
                      alpha=0.15)
    ax.set_yscale("log")
    ax.set_title(f"correlation {p:g}")
    ax.set_xlabel("training steps")
  axes[0].set_ylabel("test loss (mean MSE of the two tasks)")
  axes[0].legend(fontsize=8)
  ax = axes[-1]
  for model in models:
    finals = [[final_loss(r) for r in runs
               if r["model"] == model and r["p"] == p] for p in correlations]
    ax.errorbar(correlations, [statistics.fmean(f) for f in finals],
                yerr=[statistics.pstdev(f) for f in finals], color=colors[model], marker="o",
                capsize=3, label=labels[model])
  ax.set_yscale("log")
  ax.set_xlabel("task correlation p")
  ax.set_title("final test loss")
  fig.suptitle("MMoE synthetic benchmark (Ma et al., KDD 2018, section 3.2): mean over seeds, "
               "band = min..max", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out-dir", required=True, help="where the JSON and the PNG go")
  parser.add_argument("--correlations", default="0.0,0.5,0.7,0.9,1.0",
                      help="comma-separated task correlations p in [-1, 1]")
  parser.add_argument("--seeds", type=int, default=3, help="seeds per model and correlation")
  parser.add_argument("--steps", type=int, default=3000, help="training steps per run")
  parser.add_argument("--eval-every", type=int, default=250,
                      help="steps per dispatch, between test measurements")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
  parser.add_argument("--train-size", type=int, default=100_000)
  parser.add_argument("--test-size", type=int, default=2_000)
  parser.add_argument("--alpha-beta-std", type=float, default=0.5,
                      help="standard deviation of alpha_j and beta_j (the paper's N(0, 0.01) "
                           "read as a variance is 0.1: see the module docstring)")
  parser.add_argument("--noise-std", type=float, default=0.1,
                      help="standard deviation of the label noise (paper: N(0, 0.01))")
  parser.add_argument("--experts", type=int, default=8, help="MMoE's experts")
  parser.add_argument("--expert-units", type=int, default=16, help="each expert's width")
  parser.add_argument("--bottom-units", type=int, default=113,
                      help="the shared-bottom layer's width")
  parser.add_argument("--models", default="mmoe,omoe,shared_bottom",
                      help=f"comma-separated, of {', '.join(MODELS)}")
  args = parser.parse_args(argv)
  try:
    args.correlations = [float(p) for p in args.correlations.split(",") if p.strip()]
  except ValueError:
    parser.error(f"--correlations must be numbers, got {args.correlations!r}")
  if not args.correlations or any(not -1.0 <= p <= 1.0 for p in args.correlations):
    parser.error("--correlations must be numbers in [-1, 1]")
  args.models = [m.strip() for m in args.models.split(",") if m.strip()]
  if not args.models or any(m not in MODELS for m in args.models):
    parser.error(f"--models must be among {', '.join(MODELS)}")
  if min(args.seeds, args.steps, args.eval_every, args.batch_size) < 1:
    parser.error("--seeds, --steps, --eval-every and --batch-size must be positive")
  if args.train_size < args.batch_size or args.test_size < 1:
    parser.error("--train-size must hold one batch, --test-size be positive")
  return args


def main(argv=None) -> dict[str, Any]:
  args = parse_args(argv)
  start = time.perf_counter()
  trainers = {m: Trainer(m, args) for m in args.models}
  runs = []
  for p in args.correlations:
    for seed in range(args.seeds):
      x, labels = make_data(p, seed, args.train_size + args.test_size,
                            alpha_beta_std=args.alpha_beta_std, noise_std=args.noise_std)
      n = args.train_size
      train_data = (x[:n], {t: y[:n] for t, y in labels.items()})
      test_data = (x[n:], {t: y[n:] for t, y in labels.items()})
      label_corr = float(np.corrcoef(labels["y1"], labels["y2"])[0, 1])
      for model, trainer in trainers.items():
        result = trainer.run(seed, train_data, test_data)
        runs.append({"model": model, "p": p, "seed": seed, "label_correlation": label_corr,
                     **result})
        print(f"p={p:g} seed={seed} {model}: test MSE " + ", ".join(
            f"{t} {v:.4f}" for t, v in result["test_mse"].items())
              + f" ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
  out = {
      "paper": "Ma et al., Modeling Task Relationships in Multi-task Learning with Multi-gate "
               "Mixture-of-Experts, KDD 2018, section 3.2 and Figure 4",
      "config": {k: v for k, v in vars(args).items() if k != "out_dir"}
                | {"d": DIM, "c": SCALE, "m": NUM_SINES, "tower": list(TOWER),
                   "models": {m: {"name": MODELS[m][0], "shared_layers": list(MODELS[m][1]),
                                  "kwargs": MODELS[m][2],
                                  "parameters": trainers[m].num_params}
                              for m in args.models}},
      "summary": summarize(runs, args.models, args.correlations),
      "runs": runs,
      "seconds": round(time.perf_counter() - start, 1),
  }
  os.makedirs(args.out_dir, exist_ok=True)
  from mtl_jax import atomic  # pylint: disable=import-outside-toplevel

  atomic.write_json(os.path.join(args.out_dir, "mmoe_synthetic.json"), out)
  plot(runs, args.models, args.correlations, os.path.join(args.out_dir, "mmoe_synthetic.png"))
  print(json.dumps(out["summary"], indent=2))
  print(f"{len(runs)} runs in {out['seconds']:.0f} s; wrote {args.out_dir}/mmoe_synthetic.json "
        "and mmoe_synthetic.png", file=sys.stderr)
  return out


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from mtl_jax import cpu_tuning  # pylint: disable=g-import-not-at-top
  cpu_tuning.apply()
  main()
