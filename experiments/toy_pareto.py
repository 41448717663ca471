"""The two-objective toy problem of CAGrad, Nash-MTL and FAMO, run with every weighting method.

    python experiments/toy_pareto.py --out-dir experiments/results [--methods equal,mgda,...]
        [--steps 50000] [--scale 0.1]

Writes `toy_pareto.png` (one panel per method: the trajectories from the five starts over the
contours of the average loss, the Pareto set in grey) and `toy_pareto.md` (which methods reach
the Pareto front from which start).

**The problem** (the facts of CAGrad's official `toy.py`, github.com/Cranial-XIX/CAGrad, and of
FAMO's `experiments/toy/problem.py` and `trainer.py`, github.com/Cranial-XIX/FAMO, which is
Nash-MTL's version of it; no code copied). For x = (x1, x2) in R^2:

    f1 = c1 * (log max(|0.5 (-x1 - 7) - tanh(-x2)|, 5e-6) + 6) + c2 * f1_sq
    f2 = c1 * (log max(|0.5 (-x1 + 3) + tanh(-x2) + 2|, 5e-6) + 6) + c2 * f2_sq
    f1_sq = ((-x1 + 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20
    f2_sq = ((-x1 - 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20
    c1 = max(tanh(x2 / 2), 0),   c2 = max(tanh(-x2 / 2), 0)

and the losses are (scale * f1, f2), scale = 0.1 (`--scale`; Nash-MTL's and FAMO's default,
which makes the two losses' gradients unequal in size; CAGrad's Figure 1 is scale = 1). The
starts are FAMO's and Nash-MTL's five, (-8.5, 7.5), (0, 0), (9, 9), (-7.5, -0.5), (9, -1)
(CAGrad's Figure 1 uses (-8.5, 7.5), (-8.5, -5), (9, 9)). Each step: J = the 2 x 2 Jacobian of
the losses (jax.jacrev), the method's direction d (sum_i w_i J_i, or its `Direction`), one
Adam step on x with learning rate 1e-3 (as both official codes), 50,000 steps (`--steps`;
FAMO's trainer default; CAGrad runs 100,000). One jitted step per method, lax.scan over the
steps, vmap over the starts.

**How the methods are driven.** The "shared parameters" are x itself, so J is the whole
Jacobian (no heads). Methods that read the losses (FAMO, GLS, DWA, Uncertainty, STCH, DB-MTL,
...) are given the losses minus their lower bound (-21 scale, -21), the bound FAMO's trainer
passes as `min_losses`; the toy's losses are negative, and these methods take logs or ratios
of losses. The shift does not change J. FAMO runs with gamma = 0 (the official toy's
`run.sh`) and min_losses = 0 (the shift); `manual` with weights (1, 1); the run facts are
`optimizer` = Adam(1e-3) (for the methods with learnable weights), `steps_per_epoch` = 1,
`num_steps` = --steps. Every other hyper-parameter is the library's default. Random methods
(RLW, PCGrad, GradVac, ...) get the key fold_in(PRNGKey(0), step), the same for every start.

**The Pareto set and "reaching the front".** The Pareto set lies in the lower half plane, near
x2 = -8.36 for x1 in [-7, 7] (the segment the official plots draw). We compute the front
numerically: the losses (f1, f2) on a 2001 x 2001 grid of x1 in [-7.5, 7.5], x2 in [-10, -6],
keeping the non-dominated points. A run reaches the front when the additive epsilon indicator
of its final point q,

    eps(q) = min over front points p of max(f1(q) - f1(p), f2(q) - f2(p))

(the least amount by which both unscaled losses would have to drop for q to be on the front),
is at most TOLERANCE = 0.1. The losses span about 20 along the front (f1 from -20 to -0.4),
so 0.1 is half a percent of it; a run stuck on the upper plateau or in the valley has eps of
5 or more, and one still creeping along the valley floor toward the set has eps between.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax import weighting

STARTS = ((-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0))
LEARNING_RATE = 1e-3
LOWER = 5e-6
TOLERANCE = 0.1
LOSS_FLOOR = -21.0   # FAMO's trainer: min_losses = (-21 scale, -21)
PAPERS = """## Against the papers

What we could check in the papers' text: Nash-MTL's Figure 1 (this setup, scale 0.1, the same
five starts; arXiv:2202.01017) says that for linear scalarisation, PCGrad and CAGrad the
optimisation is controlled by the gradient of loss 2, the one of larger magnitude; a later
paper's Figure 1 on FAMO's version of the setup (Hassanpour et al. 2025, arXiv:2502.00217)
has FAMO reaching the front from all five starts. CAGrad's Figure 1 (scale 1, three starts,
100,000 steps) compares Adam on the mean loss, MGDA, PCGrad and CAGrad; we did not re-read its
caption here, so which starts fail there is not restated.

Here: equal weighting, CAGrad, UPGrad and the other mean-like methods end at x1 = -5.73, the
minimum of 0.1 f1 + f2, which sits near loss 2's end of the set (x1 = -7): loss 2 controls
them, as Nash-MTL's caption says. All of them fail from (9, 9): equal weighting stops on the
upper plateau (x about (5, 4)); PCGrad and CAGrad leave it but are still on their way down at
50,000 steps (with `--steps 100000`, CAGrad's count, both reach the front from (9, 9) too,
while equal weighting stays on the plateau). Nash-MTL and FAMO reach the front from all five starts, at spread-out points
(x1 from -3.5 to 5.2 and from -1 to 1.7). MGDA and FairGrad reach it from all five too, mostly
at loss 1's end (x1 = 7), the loss with the smaller gradients."""

HYPERPARAMETERS = {"manual": {"weights": (1.0, 1.0)}, "famo": {"gamma": 0.0, "min_losses": 0.0}}
RECORD_EVERY = 50    # trajectory points kept for the figure


def objectives(x: jnp.ndarray) -> jnp.ndarray:
  """f32[2]: the unscaled (f1, f2) of the toy at x = (x1, x2) (works on [..., 2] too)."""
  x1, x2 = x[..., 0], x[..., 1]
  log1 = jnp.log(jnp.maximum(jnp.abs(0.5 * (-x1 - 7) - jnp.tanh(-x2)), LOWER)) + 6
  log2 = jnp.log(jnp.maximum(jnp.abs(0.5 * (-x1 + 3) + jnp.tanh(-x2) + 2), LOWER)) + 6
  c1 = jnp.maximum(jnp.tanh(x2 * 0.5), 0.0)
  sq1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
  sq2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
  c2 = jnp.maximum(jnp.tanh(-x2 * 0.5), 0.0)
  return jnp.stack([log1 * c1 + sq1 * c2, log2 * c1 + sq2 * c2], -1)


def pareto_front(n: int = 2001) -> np.ndarray:
  """[K, 2] the non-dominated unscaled loss vectors over a grid of the lower half plane."""
  x1, x2 = np.meshgrid(np.linspace(-7.5, 7.5, n), np.linspace(-10.0, -6.0, n))
  f = np.asarray(jax.jit(objectives)(jnp.stack([x1.ravel(), x2.ravel()], -1)), np.float64)
  f = f[np.lexsort((f[:, 1], f[:, 0]))]           # by f1, ties by f2
  keep = f[:, 1] < np.minimum.accumulate(np.concatenate([[np.inf], f[:-1, 1]]))
  return f[keep]


def epsilon_indicator(final: np.ndarray, front: np.ndarray) -> np.ndarray:
  """[N] min over front points p of max_i (final_i - p_i), for final [N, 2] unscaled losses."""
  return np.min(np.max(final[:, None, :] - front[None, :, :], -1), -1)


def make_method(name: str, steps: int) -> weighting.Weighting:
  """Method `name` as this problem runs it (Adam's context, HYPERPARAMETERS)."""
  return weighting.get(name, context={"optimizer": optax.adam(LEARNING_RATE),
                                      "steps_per_epoch": 1, "num_steps": steps},
                       **HYPERPARAMETERS.get(name, {}))


def run_method(name: str, steps: int, scale: float):
  """(trajectories f32[S, steps // RECORD_EVERY + 1, 2], final x f32[S, 2]) of one method."""
  method = make_method(name, steps)
  scales = jnp.array([scale, 1.0], jnp.float32)
  floor = LOSS_FLOOR * scales
  opt = optax.adam(LEARNING_RATE)

  def losses_fn(x):
    return objectives(x) * scales

  def init(x):
    jac = jax.jacrev(losses_fn)(x)
    wstate = (method.init(2, grads_like=jac) if method.grad_state else method.init(2))
    return x, opt.init(x), wstate

  def step(carry, t):
    x, opt_state, wstate = carry
    losses, jac = losses_fn(x), jax.jacrev(losses_fn)(x)   # jac[i] = grad of loss i
    inputs = weighting.make_inputs(losses - floor, key=jax.random.fold_in(jax.random.PRNGKey(0), t),
                                   step=t, grads=jac)
    if method.needs != "grads":
      inputs = inputs._replace(grads=None)
    result, wstate = method.update(wstate, inputs)
    if isinstance(result, weighting.Direction):
      direction = result.grads
    else:
      direction = weighting.combine(jax.lax.stop_gradient(result), jac)
    updates, opt_state = opt.update(direction, opt_state, x)
    x = optax.apply_updates(x, updates)
    return (x, opt_state, wstate), None

  def block(carry, t0):
    carry, _ = jax.lax.scan(step, carry, t0 + jnp.arange(RECORD_EVERY))
    return carry, carry[0]

  def run(x0):
    carry, xs = jax.lax.scan(block, init(x0), jnp.arange(steps // RECORD_EVERY) * RECORD_EVERY)
    return jnp.concatenate([x0[None], xs]), carry[0]

  traj, final = jax.jit(jax.vmap(run))(jnp.array(STARTS, jnp.float32))
  return np.asarray(traj), np.asarray(final)


def plot(results: dict, front_x: np.ndarray, path: Path, scale: float) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = list(results)
  cols = min(6, len(names))
  rows = -(-len(names) // cols)
  n = 200
  g1, g2 = np.meshgrid(np.linspace(-10, 10, n), np.linspace(-10, 10, n))
  f = np.asarray(objectives(jnp.stack([g1, g2], -1))) * np.array([scale, 1.0])
  avg = f.mean(-1)
  colors = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange")
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for ax, name in zip(axes.ravel(), names):
    ax.axis("on")
    ax.contour(g1, g2, avg, levels=14, cmap="viridis", linewidths=0.6)
    ax.plot(front_x[:, 0], front_x[:, 1], color="0.55", linewidth=4, zorder=1)
    traj, ok = results[name]["traj"], results[name]["reached"]
    for s, color in enumerate(colors):
      ax.plot(traj[s, :, 0], traj[s, :, 1], color=color, linewidth=1.2, zorder=3)
      ax.plot(*traj[s, 0], "o", color="k", markersize=3, zorder=4)
      ax.plot(*traj[s, -1], "*" if ok[s] else "X", color=color, markersize=7, zorder=5,
              markeredgecolor="k", markeredgewidth=0.4)
    ax.set_title(f"{name} ({int(ok.sum())}/{len(ok)})", fontsize=9)
    ax.set_xlim(-10, 10)
    ax.set_ylim(-10, 10)
    ax.set_aspect("equal")
    ax.set_xticks([-10, -5, 0, 5, 10])
    ax.set_yticks([-10, -5, 0, 5, 10])
    ax.tick_params(labelsize=6)
  fig.suptitle(f"Toy problem (f1 scaled by {scale}): Adam lr {LEARNING_RATE}, "
               f"{results[names[0]]['steps']} steps; contours of the mean loss, grey = Pareto "
               f"set; * final point on the front, X not", fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 0.98))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def refusal(name: str, steps: int) -> str | None:
  """Why method `name` cannot run on the toy, or None: Krum and TrimmedMean need more than two
  tasks, Auto-λ a validation batch (the toy has no data)."""
  method = make_method(name, steps)
  if method.val_batch:
    return "it learns its weights on a validation batch, and the toy has no data"
  try:
    method.init(2, grads_like=jnp.zeros((2, 2))) if method.grad_state else method.init(2)
  except ValueError as e:
    return str(e)
  return None


def write_table(results: dict, path: Path, args, wall: float,
                refused: dict[str, str]) -> None:
  starts = [f"({a:g}, {b:g})" for a, b in STARTS]
  lines = [
      "# Toy Pareto problem: which methods reach the Pareto front from which start",
      "",
      f"`python experiments/toy_pareto.py --out-dir {args.out_dir} --steps {args.steps} "
      f"--scale {args.scale}` ({time.strftime('%Y-%m-%d')}, {wall:.0f} s on 2 CPU cores). "
      f"Problem of CAGrad (Liu et al. 2021, Fig. 1) as Nash-MTL and FAMO run it: loss 1 scaled "
      f"by {args.scale}, Adam lr {LEARNING_RATE}, {args.steps} steps, the five starts below. "
      f"A cell is the additive epsilon indicator of the final point against the numerically "
      f"computed Pareto front (unscaled losses; 0 = on the front); **yes** when it is at most "
      f"{TOLERANCE}. The final x follows in brackets. Values within the front grid's "
      f"resolution (about 1e-3) show as 0. See the script's docstring for the definitions.",
      "",
      "| method | " + " | ".join(starts) + " | reached |",
      "|---|" + "---|" * (len(starts) + 1),
  ]
  for name, r in results.items():
    cells = [f"{'**yes**' if ok else 'no'} {max(e, 0.0):.2g} ({x[0]:.2f}, {x[1]:.2f})"
             for ok, e, x in zip(r["reached"], r["eps"], r["final"])]
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {int(r['reached'].sum())}/5 |")
  all_ok = [n for n, r in results.items() if r["reached"].all()]
  some = [n for n, r in results.items() if not r["reached"].all()]
  lines += ["", f"From all five starts: {', '.join(all_ok) or 'none'}.", "",
            f"Not from every start: {', '.join(some) or 'none'}.", ""]
  lines += [f"Not run: {name} ({why})." for name, why in refused.items()]
  lines += ["", PAPERS, ""]
  path.write_text("\n".join(lines))


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out-dir", required=True, help="where the PNG and the table go")
  parser.add_argument("--methods", default=",".join(weighting.REGISTRY),
                      help="comma-separated registered weighting names (default: all)")
  parser.add_argument("--steps", type=int, default=50_000, help="Adam steps per run")
  parser.add_argument("--scale", type=float, default=0.1, help="the scale of the first loss")
  args = parser.parse_args(argv)
  args.methods = [m for m in args.methods.split(",") if m]
  unknown = [m for m in args.methods if m not in weighting.REGISTRY]
  if unknown:
    parser.error(f"unknown methods {unknown}; known: {sorted(weighting.REGISTRY)}")
  args.steps = max(RECORD_EVERY, args.steps // RECORD_EVERY * RECORD_EVERY)
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  out = Path(args.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  front = pareto_front()
  # The Pareto set in x, for the figure: the grid points whose losses are on the front.
  x1 = np.linspace(-7, 7, 281)
  x2 = np.linspace(-10.0, -6.0, 4001)
  fx = np.asarray(objectives(jnp.stack(np.meshgrid(x1, x2, indexing="ij"), -1)))
  front_x = np.stack([x1, x2[np.argmin(fx[..., 0] + fx[..., 1], axis=1)]], -1)
  results, refused = {}, {}
  for name in args.methods:
    if (why := refusal(name, args.steps)) is not None:
      refused[name] = why
      continue
    t0 = time.perf_counter()
    traj, final = run_method(name, args.steps, args.scale)
    final_losses = np.asarray(objectives(jnp.asarray(final)), np.float64)
    eps = np.where(np.isfinite(final_losses).all(-1), epsilon_indicator(final_losses, front),
                   np.inf)
    results[name] = dict(traj=traj, final=final, eps=eps, reached=eps <= TOLERANCE,
                         steps=args.steps)
    print(f"{name:12s} reached {int((eps <= TOLERANCE).sum())}/5  eps "
          f"{np.array2string(eps, precision=3)}  {time.perf_counter() - t0:.1f}s", flush=True)
  wall = time.perf_counter() - start
  plot(results, front_x, out / "toy_pareto.png", args.scale)
  write_table(results, out / "toy_pareto.md", args, wall, refused)
  print(f"wall {wall:.0f}s; wrote {out / 'toy_pareto.png'} and {out / 'toy_pareto.md'}")
  return results


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from mtl_jax import cpu_tuning  # pylint: disable=g-import-not-at-top
  cpu_tuning.apply()
  main()
