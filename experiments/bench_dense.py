"""Train-step time and peak memory of SegNet-MTAN on NYUv2-sized batches: mtl_jax against the
MTAN authors' PyTorch model.

    python experiments/bench_dense.py --out /tmp/bench_dense.json [--steps 5] [--warmup 2] \
        [--method mgda] [--height 288 --width 384 --batch 2]

The network of the NYUv2 protocol (Liu et al.'s SegNet-MTAN, `mtl_jax.models.segnet_mtan`;
widths 64-128-256-512-512, 13 classes, depth, normals) on random batches of 288x384 images,
batch 2, Adam 1e-4, for two weightings:

- `equal`: the sum of the three losses, one backward pass;
- `--method` (default `mgda`, MGDA-UB) in the representation mode: the per-task gradients of
  each task's attended features Z_t, their Gram matrix, the min-norm weights, one backward
  pass with the weighted losses (`weighting_kwargs.grad_wrt = "rep"` on the JAX side).

The PyTorch side is the authors' model (github.com/lorenmt/mtan, im2im_pred/
model_segnet_mtan.py, as Nash-MTL's experiments/nyuv2/models.py uses it) re-written below from
its architecture: the same layers, widths and initialisation, the losses of their `model_fit`
(NLL of log-softmax with ignore index -1, masked L1, masked 1 - cosine), `torch.optim.Adam`;
its MGDA-UB takes the gradients of the losses at the three attended features with
`torch.autograd.grad` and solves the min-norm problem by the same Frank-Wolfe iterations on
the host, as LibMTL and the MGDA authors' code do.

Each (framework, method) runs in its own worker process (`--worker`), so one's allocator,
threads and peak memory never reach another: build, `--warmup` untimed steps, then `--steps`
timed steps; the figure is the median. Peak memory: the device's peak bytes in use on a GPU
(`memory_stats()["peak_bytes_in_use"]`, `torch.cuda.max_memory_allocated`), else the worker's
peak resident set (ru_maxrss, which includes the framework's own footprint).

`--check` copies the PyTorch model's weights into ours (narrow widths, 32x64, batch statistics)
and prints each task's largest output difference: 4e-5 (log-probabilities), 3e-5 (depth) and
6e-4 (unit normals) on 2026-11-30, every one of the 102 convolutions mapped.

Output (`--out`): `dense/<method>/jax_ms`, `dense/<method>/torch_ms`, `dense/<method>/ratio`
(torch_ms / jax_ms: above 1, JAX is faster), `dense/<method>/jax_peak_mib`,
`dense/<method>/torch_peak_mib`, the parameter counts, and for `equal` also the unprefixed
`dense/jax_ms`, `dense/torch_ms`, `dense/ratio`; `machine` says where it ran. The JAX worker
calls `mtl_jax.cpu_tuning.apply()` first, as `python -m mtl_jax.main` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

NUM_CLASSES = 13
LEARNING_RATE = 1e-4
FILTERS = (64, 128, 256, 512, 512)
FRANK_WOLFE_ITERATIONS = 250


def random_batch(seed: int, batch: int, height: int, width: int) -> dict[str, np.ndarray]:
  """NYUv2-like arrays: image [B, H, W, 3] in [0, 1], label [B, H, W] (-1 on 5%), depth
  [B, H, W] in [0.5, 10] (0 on 5%), unit normals [B, H, W, 3] (0 where depth is)."""
  rng = np.random.default_rng(seed)
  shape = (batch, height, width)
  label = rng.integers(0, NUM_CLASSES, shape).astype(np.float32)
  label[rng.random(shape) < 0.05] = -1
  depth = rng.uniform(0.5, 10, shape).astype(np.float32)
  hole = rng.random(shape) < 0.05
  depth[hole] = 0
  normal = rng.normal(size=shape + (3,)).astype(np.float32)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  normal[hole] = 0
  return {"image": rng.random(shape + (3,), np.float32), "label": label, "depth": depth,
          "normal": normal}


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------------------------
# JAX.


def jax_worker(args) -> dict:
  from mtl_jax import cpu_tuning  # pylint: disable=import-outside-toplevel
  cpu_tuning.apply()
  import jax  # pylint: disable=import-outside-toplevel
  # pylint: disable=import-outside-toplevel
  from mtl_jax import build, config as config_lib, sharding, train
  from mtl_jax.data import nyuv2

  arrays = random_batch(0, args.batch, args.height, args.width)
  arrays["label"][0, 0, 0] = NUM_CLASSES - 1
  dataset = nyuv2.dataset_from_arrays(arrays, arrays, arrays)
  config = config_lib.default_config()
  config.model.name = "segnet_mtan"
  config.model.backbone = config.model.shared_layers = config.model.task_layers = ()
  config.model.kwargs = {"filters": FILTERS}
  config.optimizer.learning_rate = LEARNING_RATE
  if args.method != "equal":
    config.weighting = args.method
    config.weighting_kwargs = {"grad_wrt": "rep"}
  config = config_lib.complete(config)
  mesh = sharding.make_mesh(jax.devices()[:1])
  setup = build.build_setup(config, dataset.tasks)
  batch = dataset.train.batch(np.arange(args.batch))
  state = train.create_train_state(setup, 0, batch["inputs"], mesh)
  params = sum(p.size for p in jax.tree.leaves(state.params))
  step = train.make_step_fn(setup, mesh)
  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    state, losses = step(state, batch)
    jax.block_until_ready(losses)
    if i >= args.warmup:
      times.append(time.perf_counter() - start)
  stats = jax.devices()[0].memory_stats() or {}
  peak = (stats["peak_bytes_in_use"] / 2 ** 20 if "peak_bytes_in_use" in stats
          else peak_rss_mib())
  return {"ms": 1e3 * float(np.median(times)), "peak_mib": peak, "params": int(params),
          "losses": [float(v) for v in np.asarray(losses)], "device": str(jax.devices()[0])}


# ----------------------------------------------------------------------------------------------
# PyTorch: the MTAN authors' SegNet-MTAN, written from its architecture (module docstring).


def torch_model(torch):
  """The SegNet-MTAN class, built on `torch` (imported only in its worker)."""
  nn, functional = torch.nn, torch.nn.functional

  def conv_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

  def attention(cin, width):
    return nn.Sequential(nn.Conv2d(cin, width, 1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.Sigmoid())

  def head(width, channels):
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.Conv2d(width, channels, 1))

  class SegNetMTAN(nn.Module):
    def __init__(self, f=FILTERS, tasks=3):
      super().__init__()
      stages = range(5)
      extra = lambda i: 1 if i < 2 else 2
      self.enc_first = nn.ModuleList(conv_block(3 if i == 0 else f[i - 1], f[i]) for i in stages)
      self.enc_rest = nn.ModuleList(
          nn.Sequential(*[conv_block(f[i], f[i]) for _ in range(extra(i))]) for i in stages)
      self.dec_first = nn.ModuleList(conv_block(f[i], f[max(i - 1, 0)]) for i in stages)
      self.dec_rest = nn.ModuleList(
          nn.Sequential(*[conv_block(f[max(i - 1, 0)], f[max(i - 1, 0)])
                          for _ in range(extra(i))]) for i in stages)
      self.enc_att = nn.ModuleList(nn.ModuleList(
          attention(f[0] if i == 0 else 2 * f[i], f[i]) for i in stages) for _ in range(tasks))
      self.dec_att = nn.ModuleList(nn.ModuleList(
          attention(2 * f[0] if i == 0 else f[i] + f[i - 1], f[max(i - 1, 0)]) for i in stages)
          for _ in range(tasks))
      self.enc_block_att = nn.ModuleList(conv_block(f[i], f[min(i + 1, 4)]) for i in stages)
      self.dec_block_att = nn.ModuleList(
          conv_block(f[i], f[i - 1] if 0 < i < 4 else f[i]) for i in stages)
      self.heads = nn.ModuleList(head(f[0], c) for c in (NUM_CLASSES, 1, 3))
      for m in self.modules():
        if isinstance(m, nn.Conv2d):
          nn.init.xavier_normal_(m.weight)
          nn.init.constant_(m.bias, 0)

    def encode(self, x):
      first, last, where, unpooled, decoded = [], [], [], [], []
      for i in range(5):
        x = self.enc_first[i](x)
        first.append(x)
        x = self.enc_rest[i](x)
        last.append(x)
        x, w = functional.max_pool2d(x, 2, 2, return_indices=True)
        where.append(w)
      for i in reversed(range(5)):
        x = functional.max_unpool2d(x, where[i], 2, 2)
        unpooled.append(x)
        x = self.dec_rest[i](self.dec_first[i](x))
        decoded.append(x)
      reps = []
      for t in range(len(self.heads)):
        e = None
        for j in range(5):
          inputs = first[j] if j == 0 else torch.cat([first[j], e], dim=1)
          a = self.enc_att[t][j](inputs)
          e = functional.max_pool2d(self.enc_block_att[j](a * last[j]), 2, 2)
        u = e
        for k, stage in enumerate(reversed(range(5))):
          up = functional.interpolate(u, scale_factor=2, mode="bilinear", align_corners=True)
          up = self.dec_block_att[stage](up)
          u = self.dec_att[t][stage](torch.cat([unpooled[k], up], dim=1)) * decoded[k]
        reps.append(u)
      return reps

    def decode(self, reps):
      seg, depth, normal = (h(z) for h, z in zip(self.heads, reps))
      return (functional.log_softmax(seg, dim=1), depth,
              normal / torch.norm(normal, p=2, dim=1, keepdim=True))

  return SegNetMTAN


def torch_losses(torch, outputs, label, depth, normal):
  """The three losses of the authors' `model_fit`."""
  functional = torch.nn.functional
  seg, pred_depth, pred_normal = outputs
  depth_mask = (depth.sum(1, keepdim=True) != 0).float()
  normal_mask = (normal.sum(1, keepdim=True) != 0).float()
  return torch.stack([
      functional.nll_loss(seg, label, ignore_index=-1),
      (torch.abs(pred_depth - depth) * depth_mask).sum() / depth_mask.sum(),
      1 - (pred_normal * normal * normal_mask).sum() / normal_mask.sum()])


def min_norm_weights(gram: np.ndarray, iterations: int = FRANK_WOLFE_ITERATIONS) -> np.ndarray:
  """Frank-Wolfe for min_w |sum_t w_t g_t|^2 on the simplex (Sener and Koltun 2018, Alg. 2)."""
  w = np.full(len(gram), 1.0 / len(gram))
  for _ in range(iterations):
    t = int(np.argmin(gram @ w))
    direction = -w.copy()
    direction[t] += 1
    a = direction @ gram @ direction
    if a <= 1e-12:
      break
    step = float(np.clip(-(w @ gram @ direction) / a, 0, 1))
    if step < 1e-6:
      break
    w = w + step * direction
  return w


def torch_worker(args) -> dict:
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  model = torch_model(torch)().to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
  arrays = random_batch(0, args.batch, args.height, args.width)
  to = lambda a, perm: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1) if perm
                                                             else a)).to(device)
  image, normal = to(arrays["image"], True), to(arrays["normal"], True)
  depth = to(arrays["depth"][..., None], True)
  label = to(arrays["label"], False).long()
  params = sum(p.numel() for p in model.parameters())

  def step():
    optimizer.zero_grad()
    reps = model.encode(image)
    losses = torch_losses(torch, model.decode(reps), label, depth, normal)
    if args.method == "equal":
      losses.sum().backward()
    else:
      grads = [torch.autograd.grad(losses[t], reps[t], retain_graph=True)[0].flatten()
               for t in range(3)]
      stacked = torch.stack(grads)
      weights = min_norm_weights((stacked @ stacked.T).double().cpu().numpy())
      (losses * torch.as_tensor(weights, dtype=losses.dtype, device=device)).sum().backward()
    optimizer.step()
    return losses

  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    losses = step()
    if device.type == "cuda":
      torch.cuda.synchronize()
    if i >= args.warmup:
      times.append(time.perf_counter() - start)
  peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda"
          else peak_rss_mib())
  return {"ms": 1e3 * float(np.median(times)), "peak_mib": peak, "params": int(params),
          "losses": [float(v) for v in losses.detach().cpu()], "device": str(device),
          "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------------


def check_outputs(filters=(4, 8, 8, 8, 8), height=32, width=64) -> dict[str, float]:
  """{task: max |ours - theirs|}: the PyTorch model's weights copied into ours, both run on
  the same batch with batch statistics (train mode); a check that the two are one network."""
  import flax  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from mtl_jax import models  # pylint: disable=import-outside-toplevel
  from mtl_jax.tasks import Task  # pylint: disable=import-outside-toplevel

  names = ("segmentation", "depth", "normals")
  tasks = (Task(names[0], "segmentation", tuple(range(NUM_CLASSES)), label_shape=(height, width)),
           Task(names[1], "depth", label_shape=(height, width)),
           Task(names[2], "normals", label_shape=(height, width, 3)))
  torch.manual_seed(0)
  theirs = torch_model(torch)(f=filters).train()
  ours = models.get("segnet_mtan", tasks, filters=filters)
  x = np.random.default_rng(0).random((2, height, width, 3), np.float32)
  variables = ours.init(jax.random.PRNGKey(0), jnp.asarray(x))
  params = flax.core.unfreeze(variables["params"])

  def copy(scope, module):
    scope["kernel"] = module.weight.detach().numpy().transpose(2, 3, 1, 0)
    scope["bias"] = module.bias.detach().numpy()

  for i in range(5):
    trunk = params["trunk"]
    copy(trunk[f"encoder_{i}"]["Conv_0"], theirs.enc_first[i][0])
    copy(trunk[f"decoder_{i}"]["Conv_0"], theirs.dec_first[i][0])
    for k, block in enumerate(theirs.enc_rest[i]):
      copy(trunk[f"encoder_{i}_{k}"]["Conv_0"], block[0])
    for k, block in enumerate(theirs.dec_rest[i]):
      copy(trunk[f"decoder_{i}_{k}"]["Conv_0"], block[0])
    copy(params["shared_attention"][f"encoder_{i}"]["Conv_0"], theirs.enc_block_att[i][0])
    copy(params["shared_attention"][f"decoder_{i}"]["Conv_0"], theirs.dec_block_att[i][0])
    for t, name in enumerate(names):
      for side, layers in (("encoder", theirs.enc_att), ("decoder", theirs.dec_att)):
        copy(params[f"attention_{name}"][f"{side}_{i}"]["Conv_0"], layers[t][i][0])
        copy(params[f"attention_{name}"][f"{side}_{i}"]["Conv_1"], layers[t][i][3])
  for t, name in enumerate(names):
    copy(params[f"head_{name}"]["Conv_0"], theirs.heads[t][0])
    copy(params[f"head_{name}"]["Conv_1"], theirs.heads[t][1])
  outputs, _ = ours.apply({"params": params, "batch_stats": variables["batch_stats"]},
                          jnp.asarray(x), train=True, mutable=["batch_stats"])
  mine = {names[0]: jax.nn.log_softmax(outputs[names[0]]), names[1]: outputs[names[1]],
          names[2]: tasks[2].kind_spec.prepare(tasks[2], outputs[names[2]])}
  with torch.no_grad():
    reference = theirs.decode(theirs.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))))
  return {name: float(np.abs(np.asarray(mine[name]) - r.numpy().transpose(0, 2, 3, 1)).max())
          for name, r in zip(names, reference)}


def run_worker(framework: str, method: str, args) -> dict:
  command = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--method",
             method, "--steps", str(args.steps), "--warmup", str(args.warmup), "--height",
             str(args.height), "--width", str(args.width), "--batch", str(args.batch)]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f"{framework} worker ({method}) failed:\n{done.stderr[-4000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", help="the JSON file to write")
  parser.add_argument("--method", default="mgda", help="the gradient method, in rep mode")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--height", type=int, default=288)
  parser.add_argument("--width", type=int, default=384)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--check", action="store_true",
                      help="only compare the two models' outputs on shared weights")
  parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.check:
    print(json.dumps(check_outputs()))
    return
  if args.worker:
    result = (jax_worker if args.worker == "jax" else torch_worker)(args)
    print(json.dumps(result))
    return
  if not args.out:
    parser.error("--out is required")
  out = {"machine": {"cpu": platform.processor() or platform.machine(),
                     "cores": os.cpu_count(), "load_start": os.getloadavg(),
                     "shape": [args.batch, args.height, args.width], "steps": args.steps,
                     "warmup": args.warmup}}
  for method in ("equal", args.method):
    jax_result, torch_result = run_worker("jax", method, args), run_worker("torch", method, args)
    prefix = f"dense/{method}"
    out[f"{prefix}/jax_ms"], out[f"{prefix}/torch_ms"] = jax_result["ms"], torch_result["ms"]
    out[f"{prefix}/ratio"] = torch_result["ms"] / jax_result["ms"]
    out[f"{prefix}/jax_peak_mib"] = jax_result["peak_mib"]
    out[f"{prefix}/torch_peak_mib"] = torch_result["peak_mib"]
    out[f"{prefix}/jax_params"], out[f"{prefix}/torch_params"] = (jax_result["params"],
                                                                   torch_result["params"])
    out["machine"][f"{method}_devices"] = [jax_result["device"], torch_result["device"]]
    print(f"{method}: jax {jax_result['ms']:.0f} ms, torch {torch_result['ms']:.0f} ms, peak "
          f"{jax_result['peak_mib']:.0f} / {torch_result['peak_mib']:.0f} MiB", flush=True)
  out["dense/jax_ms"] = out["dense/equal/jax_ms"]
  out["dense/torch_ms"] = out["dense/equal/torch_ms"]
  out["dense/ratio"] = out["dense/equal/ratio"]
  out["machine"]["load_end"] = os.getloadavg()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
