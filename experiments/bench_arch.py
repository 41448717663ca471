"""Train-step time of each multi-task architecture: mtl_jax against LibMTL's PyTorch code.

    pip install -e '.[bench]' && pip install LibMTL==1.1.5 --no-deps   # see below
    flock /tmp/bench.lock python experiments/bench_arch.py --out /tmp/bench_arch.json \
        [--archs mmoe,cgc,ple,dselect_k,cross_stitch,mtan,ltb] [--settings small,large,conv] \
        [--rounds 5] [--steps N] [--torch-tuned] [--scan]

Every architecture is timed in milliseconds per train step against the same architecture in
LibMTL (median-research-group/LibMTL, the PyTorch multi-task library), with the same layer
sizes, Adam (learning rate 1e-3), equal weighting (the sum of the task losses), on the same
random batches (four made once and cycled), one device, default threads on both sides:

| setting | inputs | experts / columns | tasks and towers | batch | archs |
| --- | --- | --- | --- | --- | --- |
| `small` | 499 (MMoE paper's census-income) | 8 experts of Dense 16-8 | 2 binary, tower [8] + 1 logit | 256 | mmoe cgc ple dselect_k |
| `large` | 512 | 8 experts of Dense 256-128 | 4 binary, tower [64] + 1 logit | 256 | mmoe cgc ple dselect_k |
| `conv` | 64x64x3 images | stages conv64-p, conv64-r-p, conv128-r-p, conv256-r-p, conv512-r | 2 tasks (10 and 2 classes), global max pool + Dense | 32 | cross_stitch mtan ltb |

(`hps` can be named in `--archs` too: hard parameter sharing with the expert's layers (or the
conv stages) as the trunk, LibMTL's `HPS`, in every setting: the baseline each architecture
adds its cost to.) In the conv stages "conv" is a 3x3 convolution with bias and ReLU, "p" a
2x2 max pool, "r" a residual block of two 3x3 convolutions (relu(x + conv(relu(conv(x)))));
the widths are ResNet-18's, which LibMTL's MTAN hard-codes ([64, 128, 256, 512] after the four
ResNet layers); the last stage works on 4x4 maps.

Reading the conv figures: per-task columns (`cross_stitch`, `ltb`), expert banks and MTAN's
attention modules keep their parameters stacked; on XLA:CPU a stack of image layers runs as an
unrolled loop of separate convolutions (`mtl_jax/models/stacked.py`), because `jax.vmap` turns
it into grouped convolutions that XLA:CPU runs slowly: in a micro-benchmark (2026-11-30, jaxlib
0.10.2, batch 32, T = 2, a 3x3 conv's forward and backward) those took 600 / 160 / 110 ms on
32x32x64 / 8x8x256 / 4x4x512 maps against 63 / 35 / 42 ms as separate convolutions; the
cross-stitch conv step went from 3,491 to 526 ms with the loop.

`--settings conv32` (not run by default) is the same conv network on 32x32 images, so on 2x2
maps in its last stage: there XLA:CPU (jaxlib 0.10.2, with or without `cpu_tuning`) is
pathologically slow: one 3x3 "SAME" convolution of 512 channels on [32, 2, 2, 512] took 390 ms
forward, against 14 ms on [32, 4, 4, 512] (four times the FLOPs), and the whole `hps` step
~2 s against PyTorch's ~0.1 s (2026-11-30, a busy 2-core machine), where on 64x64 images JAX
was the faster of the two.

Output (`--out`): `{"<arch>/<setting>/jax_ms", "<arch>/<setting>/torch_ms",
"<arch>/<setting>/ratio"}`, medians over the rounds, ratio = torch_ms / jax_ms (above 1: JAX is
faster); `"<arch>/<setting>/jax_params"` and `".../torch_params"`, each model's trainable
parameter count (a check that the sizes match; the differences listed below explain the rest);
with `--torch-tuned` also `.../torch_tuned_ms` and `.../ratio_tuned` (PyTorch in a
process with mtl_jax's allocator settings, as `bench_cnn.py`'s `torch_tuned`); with `--scan`
also `.../jax_scan_ms` and `.../ratio_scan` (torch_ms over it): the same JAX step, but each
measurement's steps in one `train.make_train_fn` dispatch, a `lax.scan` over batch indices into
the four batches on the device, as `train_and_evaluate` runs in-memory (`from_arrays`) data
(`config.steps_per_dispatch` steps a dispatch), without the per-step dispatch cost that
dominates the small setting's ~1-2 ms steps; and `machine`:
CPU, core count, load averages at the start and the end, library versions, the settings.

**How it runs.** Two worker processes, one per framework (so one's allocator and thread
settings never reach the other): the JAX worker calls `mtl_jax.cpu_tuning.apply()` before JAX
starts, as `python -m mtl_jax.main` does; the torch worker imports no JAX. Each builds every
(arch, setting) case, compiles it and runs `WARMUP_STEPS` untimed steps, then answers requests
for N timed steps. A round times every case on both sides, cases in a rotating order and the
two sides alternating which goes first; figures are medians over `--rounds` rounds of
`--steps` steps (default per setting: `DEFAULT_STEPS`). Per-round figures and the load average
go to stderr. Run it on an idle machine (`flock` against the other benchmarks): on shared cores
PyTorch's OpenMP threads wait on each other and the ratios inflate (rounds that disagree by
more than ~20% mean a busy machine). With the defaults a run takes about 10 minutes on a
2-core machine, a few of them building and compiling the cases (an estimate from short runs).

**The JAX side** is what users get: `config.model.name = <arch>` with the hyper-parameters in
`config.model.kwargs`, `build.build_setup`, `train.create_train_state` and `train.make_step_fn`
(the library's jit-compiled train step: the masked per-task losses, the equal weighting, one
backward pass, the optax Adam update), called once per step on batches already on the device,
as `bench_cnn.py` does. An architecture the library does not have (yet) stops the script with
a message naming it before any timing.

**The PyTorch side** is LibMTL 1.1.5's own architecture classes (`LibMTL/architecture/*.py`,
the PyPI wheel), in the loop LibMTL's `Trainer` runs with `EW` weighting: `zero_grad`, the
model's forward (`{task: output}`), the per-task losses, `losses.sum().backward()`,
`optimizer.step()` (Adam, lr 1e-3). LibMTL's package `__init__` imports
`torchvision.models.utils`, which torchvision >= 0.13 no longer has, and pulls in its trainer
and weightings; with its dependencies pip resolves torchvision to 0.28.0, which does not even
import with torch 2.13.0+cpu. So the wheel is installed without dependencies (`--no-deps`; no
torchvision is needed, and LibMTL is not in setup.py's `bench` extra) and its modules are
loaded from the installed files under a stub `LibMTL` package (`load_libmtl`):
`LibMTL/architecture/*.py` and `LibMTL/model/resnet.py` (MTAN builds its attention blocks from
its `BasicBlock`), the latter with a stand-in for torchvision's
`load_state_dict_from_url`, which only downloads pretrained weights and is never called here.
LTB is not in the 1.1.5 wheel: `LTB_SOURCE` below is `LibMTL/architecture/LTB.py` from the
GitHub repository (commit 4336804847ea, 2025-05-14, MIT licence), verbatim, loaded the same way.

How each LibMTL class is set up, and what still differs from the JAX model:

* `mmoe`, `cgc`, `dselect_k`: `encoder_class` builds one expert, an `nn.Sequential` MLP of the
  setting's widths with ReLU after every Linear (as mtl_jax's Dense+ReLU spec), so LibMTL runs
  its experts in a Python loop over an `nn.ModuleList` and stacks them; `decoders` are the towers
  (Linear+ReLU per width, then Linear to the task's output); `img_size=[inputs]`.
  `num_experts=[8]` (MMoE, DSelect-k), `[S, s_1, ..., s_T]` for CGC (S shared, s_t per task;
  `EXPERTS` below). DSelect-k: `num_nonzeros=2`, `kgamma=1.0` on both sides, the entropy term
  weighted 1e-6 (LibMTL's constant, summed over the batch; mtl_jax's `entropy_reg`, on the batch
  mean). LibMTL's DSelect-k backpropagates that term inside `forward` (for the last task's
  selectors only, a LibMTL quirk kept as is); mtl_jax adds its `regularizer` (every task's) to
  the step with one more backward pass over the gates.
* `ple`: LibMTL's PLE is written for ResNet encoders (it cuts each expert into the levels
  conv1+bn1+relu+maxpool, layer1, ..., layer4 and gates each level). Its expert class here is an
  MLP exposing those attributes: `conv1` the first Linear, `relu` its ReLU, `bn1` and `maxpool`
  identities, `layer1` the second Linear+ReLU, and `layer2..4` identities that the encoder never
  reaches: LibMTL's `_transform_resnet_PLE` is used as is except that its forward loop over five
  levels (`range(5)`) runs over the MLP's two (`_PLELevels`: the forward transcribed with that one
  change, and the gates of the unused levels removed). mtl_jax's PLE makes one extraction level
  per layer of the expert spec (its default), so both are two-level PLEs with the same experts
  and task gates; mtl_jax's also has the paper's shared gate between levels (its shared experts
  read the shared branch, once), where LibMTL runs its shared experts on each task's branch
  (T times per level) and has no shared gate.
* `cross_stitch`, `ltb`: LibMTL builds one encoder per task and reaches into its ResNet layers
  (`conv1, bn1, relu, maxpool` as one stem per task, then `layer1..4`); `SpecEncoder` is the conv
  stages above under those names (`bn1` an identity: mtl_jax's spec convs have no batch norm),
  so LibMTL's columns are mtl_jax's (parameter counts equal but for the mixing weights).
  Cross-stitch: LibMTL stitches after layers 1-3 with one weight per source task (`[4, T]`, the
  same mix for every task, in the 1.1.5 wheel; GitHub's version has `[4, T, T]`), initialised to
  ones; mtl_jax after all five stages with a T x T matrix each (0.9 / 0.1, its default). LTB:
  LibMTL's Gumbel-softmax search phase (`epoch` past its 1% warm-up; `hard=True`) over one
  column per task mixed before each of its four layers; mtl_jax's LTB with as many branches as
  tasks, its tree layers cut from the same spec (a new layer at every width and every "r": nine
  layers, so eight mixes) and `search_steps` beyond the run, so every timed step is a search
  step (hard samples, straight-through).
* `mtan`: LibMTL's MTAN on one `SpecEncoder` (shared). Its attention differs from mtl_jax's by
  design: LibMTL attends at the four ResNet layers (not the stem), computes a layer's mask from
  `layer[:-1]` and applies it to `layer[-1]`'s output, with g and h each a 1x1 conv + BatchNorm
  and f (between levels, shared) a ResNet `BasicBlock` (two 3x3 convs, BatchNorm, a 1x1
  shortcut); mtl_jax attends at all five stages, mask from and applied to the stage's output,
  g and h plain 1x1 convs and f one 3x3 conv (LibMTL's 14.8M parameters against mtl_jax's
  11.6M). For LibMTL's
  split, `SpecEncoder` for MTAN puts each stage's conv in `layer[:-1]` and its residual block
  in `layer[-1]`, and the 2x2 pool ending a stage at the start of the next one (the same
  composition of layers).
* Convolutions run channels_last on the PyTorch side (its faster layout on CPU here).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from typing import Any, Callable

import numpy as np

LEARNING_RATE = 1e-3
WARMUP_STEPS = 5     # untimed steps per case and side, after compilation
NUM_BATCHES = 4      # distinct random batches each case cycles through
READY = "ready"
LIBMTL_VERSION = "1.1.5"
INSTALL_HINT = f"pip install LibMTL=={LIBMTL_VERSION} --no-deps"


# ----------------------------------------------------------------------------------------------
# Settings and hyper-parameters.


@dataclasses.dataclass(frozen=True)
class Setting:
  """One benchmark setting: inputs, the expert (or stage) spec, the tasks and their towers."""
  name: str
  input_shape: tuple[int, ...]   # one example: (D,) or (H, W, C)
  layers: tuple                  # mtl_jax `shared_layers`: one expert, or the conv stages
  towers: tuple                  # mtl_jax `task_layers`
  tasks: tuple[tuple[str, int], ...]   # (name, classes); 1 = binary (one logit)
  batch_size: int

  @property
  def image(self) -> bool:
    return len(self.input_shape) == 3


CONV_STAGES = (64, "p", 64, "r", "p", 128, "r", "p", 256, "r", "p", 512, "r")
SETTINGS = {
    "small": Setting("small", (499,), (16, 8), (8,), (("income", 1), ("marital", 1)), 256),
    "large": Setting("large", (512,), (256, 128), (64,),
                     tuple((f"t{i}", 1) for i in range(4)), 256),
    "conv": Setting("conv", (64, 64, 3), CONV_STAGES, (), (("a", 10), ("b", 2)), 32),
    # Not run by default: the same network on 32x32 images, where the last stage's maps are
    # 2x2 (module docstring: XLA:CPU's 3x3 convolutions on 2x2 maps).
    "conv32": Setting("conv32", (32, 32, 3), CONV_STAGES, (), (("a", 10), ("b", 2)), 32),
}
TABULAR_ARCHS = ("mmoe", "cgc", "ple", "dselect_k")
CONV_ARCHS = ("cross_stitch", "mtan", "ltb")
ARCHS = TABULAR_ARCHS + CONV_ARCHS + ("hps",)
DEFAULT_ARCHS = TABULAR_ARCHS + CONV_ARCHS
SETTINGS_OF = {**{a: ("small", "large") for a in TABULAR_ARCHS},
               **{a: ("conv", "conv32") for a in CONV_ARCHS},
               "hps": ("small", "large", "conv", "conv32")}
DEFAULT_SETTINGS = ("small", "large", "conv")
DEFAULT_STEPS = {"small": 200, "large": 40, "conv": 5, "conv32": 5}   # per measurement

NUM_EXPERTS = 8               # MMoE, DSelect-k
EXPERTS = {"small": (4, 2), "large": (4, 1)}   # CGC, PLE: (shared, per task): 8 in all
# LibMTL's DSelect-k weighs its entropy term 1e-6 (a constant in its code); mtl_jax's default 1e-3.
DSELECT_K = {"num_nonzeros": 2, "gamma": 1.0, "entropy_reg": 1e-6}
GLOBAL_POOLING = "max"


def jax_kwargs(arch: str, setting: Setting) -> dict[str, Any]:
  """`config.model.kwargs` of the architecture in this setting."""
  if arch == "mmoe":
    return {"num_experts": NUM_EXPERTS}
  if arch in ("cgc", "ple"):
    shared, per_task = EXPERTS[setting.name]
    return {"num_shared_experts": shared, "num_task_experts": per_task}
  if arch == "dselect_k":
    return {"num_experts": NUM_EXPERTS, **DSELECT_K}
  if arch == "ltb":
    return {"search_steps": 10**9}   # every timed step a search step, as LibMTL past warm-up
  return {}


def jax_tasks(setting: Setting):
  """mtl_jax Tasks: binary for one output, classification otherwise."""
  from mtl_jax.tasks import Task  # pylint: disable=import-outside-toplevel

  return tuple(Task(name, "binary") if n == 1 else Task(name, "classification",
                                                        classes=tuple(range(n)))
               for name, n in setting.tasks)


def random_batches(setting: Setting, seed: int = 0) -> list[dict]:
  """NUM_BATCHES batches {"inputs": f32[B, ...], "labels": {task: i32[B]}}: standard normal
  (tabular) or uniform [0, 1) (images) inputs, random classes."""
  rng = np.random.default_rng(seed)
  shape = (setting.batch_size, *setting.input_shape)
  out = []
  for _ in range(NUM_BATCHES):
    x = (rng.random(shape, dtype=np.float32) if setting.image
         else rng.standard_normal(shape, dtype=np.float32))
    out.append({"inputs": x,
                "labels": {name: rng.integers(0, max(n, 2), setting.batch_size).astype(np.int32)
                           for name, n in setting.tasks}})
  return out


def case_name(arch: str, setting: str) -> str:
  return f"{arch}/{setting}"


# ----------------------------------------------------------------------------------------------
# mtl_jax.


def jax_config(arch: str, setting: Setting):
  """The library's configuration of this case: the registered model by name, Adam, equal."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  import mtl_jax  # pylint: disable=import-outside-toplevel

  c = mtl_jax.default_config()
  c.model.name = arch
  c.model.kwargs = ml_collections.ConfigDict(jax_kwargs(arch, setting))
  c.model.backbone = ()
  c.model.shared_layers = setting.layers
  c.model.task_layers = setting.towers
  c.model.global_pooling = GLOBAL_POOLING
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = LEARNING_RATE
  c.optimizer.schedule = "constant"
  c.weighting = "equal"
  c.batch_size = setting.batch_size
  return c


def check_jax_arch(arch: str, setting: Setting) -> None:
  """SystemExit naming the architecture when mtl_jax cannot build it for this setting."""
  from mtl_jax import build  # pylint: disable=import-outside-toplevel
  from mtl_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel

  try:
    build.build_setup(jax_config(arch, setting), jax_tasks(setting))
  except NotImplementedError as e:
    raise SystemExit(f"bench_arch: architecture {arch!r} is not available in mtl_jax: {e}; "
                     f"leave it out with --archs") from None
  except (ConfigError, ValueError) as e:
    raise SystemExit(f"bench_arch: architecture {arch!r} ({setting.name}): mtl_jax refuses "
                     f"this benchmark's configuration: {e}") from None


def jax_loop(arch: str, setting: Setting, scan: bool = False) -> Callable[[int], float]:
  """run(steps) -> seconds for `steps` steps of mtl_jax's train step, compiled (steps = 0:
  the parameter count).

  scan: run the steps as `train_and_evaluate` does on in-memory data: all of them in one
    `train.make_train_fn` dispatch (a `lax.scan` over batch indices into the data on the
    device), compiled (and run once, untimed) the first time a step count is asked for.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from mtl_jax import build, sharding, train  # pylint: disable=import-outside-toplevel

  setup = build.build_setup(jax_config(arch, setting), jax_tasks(setting))
  mesh = sharding.make_mesh(jax.devices()[:1])
  batches = random_batches(setting)
  state = train.create_train_state(setup, 0, batches[0]["inputs"][:1], mesh)
  if scan:
    train_fn = train.make_train_fn(setup, mesh, on_device=True)
    source = jax.device_put(jax.tree.map(lambda *b: np.concatenate(b), *batches),
                            sharding.replicated(mesh))
    rows = np.arange(NUM_BATCHES * setting.batch_size, dtype=np.int32).reshape(
        NUM_BATCHES, setting.batch_size)
    compiled = set()
  else:
    step_fn = train.make_step_fn(setup, mesh)
    batches = [jax.device_put(b, sharding.batch_sharding(mesh)) for b in batches]

  def run(steps: int) -> float:
    nonlocal state
    if steps == 0:
      return float(sum(p.size for p in jax.tree.leaves(state.params)))
    if scan:
      xs = jax.device_put(rows[np.arange(steps) % NUM_BATCHES], sharding.batch_sharding(mesh, 1))
      if steps not in compiled:   # compile this length and run it once, untimed
        state, summary = train_fn(state, source, xs)
        jax.block_until_ready(summary)
        compiled.add(steps)
      start = time.perf_counter()
      state, summary = train_fn(state, source, xs)
      jax.block_until_ready((state, summary))
      return time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
      state, losses = step_fn(state, batches[i % NUM_BATCHES])
    jax.block_until_ready((state, losses))
    return time.perf_counter() - start

  return run


# ----------------------------------------------------------------------------------------------
# LibMTL.


# LibMTL/architecture/LTB.py at median-research-group/LibMTL@4336804847eaa5e0b924b743d76beec7ac3fdc97
# (MIT licence, Copyright (c) 2021 Baijiong Lin), verbatim: the 1.1.5 wheel predates it.
LTB_SOURCE = r'''import torch
import torch.nn as nn
import torch.nn.functional as F
import numpy as np

from LibMTL.architecture.abstract_arch import AbsArchitecture


class _transform_resnet_ltb(nn.Module):
    def __init__(self, encoder_list, task_name, device):
        super(_transform_resnet_ltb, self).__init__()
        
        self.task_name = task_name
        self.task_num = len(task_name)
        self.device = device
        # self.epochs = epochs
        self.resnet_conv = nn.ModuleDict({task: nn.Sequential(encoder_list[tn].conv1, encoder_list[tn].bn1, 
                                                              encoder_list[tn].relu, encoder_list[tn].maxpool) for tn, task in enumerate(self.task_name)})
        self.resnet_layer = nn.ModuleDict({})
        for i in range(4):
            self.resnet_layer[str(i)] = nn.ModuleList([])
            for tn in range(self.task_num):
                encoder = encoder_list[tn]
                self.resnet_layer[str(i)].append(eval('encoder.layer'+str(i+1)))
        self.alpha = nn.Parameter(torch.ones(6, self.task_num, self.task_num))
        
    def forward(self, inputs, epoch, epochs):
        if epoch < epochs/100: # warmup
            alpha = torch.ones(6, self.task_num, self.task_num).to(self.device)
        else:
            tau = epochs/20 / np.sqrt(epoch+1) # tau decay
            alpha = F.gumbel_softmax(self.alpha, dim=-1, tau=tau, hard=True)

        ss_rep = {i: [0]*self.task_num for i in range(5)}
        for i in range(5): # i: layer idx
            for tn, task in enumerate(self.task_name): # tn: task idx
                if i == 0:
                    ss_rep[i][tn] = self.resnet_conv[task](inputs)
                else:
                    child_rep = sum([alpha[i,tn,j]*ss_rep[i-1][j] for j in range(self.task_num)]) # j: module idx
                    ss_rep[i][tn] = self.resnet_layer[str(i-1)][tn](child_rep)
        return ss_rep[4]

class LTB(AbsArchitecture):
    r"""Learning To Branch (LTB).

    This method is proposed in `Learning to Branch for Multi-Task Learning (ICML 2020) <http://proceedings.mlr.press/v119/guo20e.html>`_ \
    and implemented by us. 

    .. warning::
            - :class:`LTB` does not work with multi-input problems, i.e., ``multi_input`` must be ``False``.
            - :class:`LTB` is only supported by ResNet-based encoders.
    """
    def __init__(self, task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs):
        super(LTB, self).__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs)

        if self.multi_input:
            raise ValueError('No support LTB for multiple inputs MTL problem')
            
        self.encoder = nn.ModuleList([self.encoder_class() for _ in range(self.task_num)])
        self.encoder = _transform_resnet_ltb(self.encoder, task_name, device)

    def forward(self, inputs, task_name=None):
        r"""
        Args: 
            inputs (torch.Tensor): The input data.
            task_name (str, default=None): The task name corresponding to ``inputs`` if ``multi_input`` is ``True``.
        
        Returns:
            dict: A dictionary of name-prediction pairs of type (:class:`str`, :class:`torch.Tensor`).
        """
        out = {}
        s_rep = self.encoder(inputs, self.epoch, self.epochs)
        same_rep = True if not isinstance(s_rep, list) and not self.multi_input else False
        for tn, task in enumerate(self.task_name):
            if task_name is not None and task != task_name:
                continue
            ss_rep = s_rep[tn] if isinstance(s_rep, list) else s_rep
            ss_rep = self._prepare_rep(ss_rep, task, same_rep)
            out[task] = self.decoders[task](ss_rep)
        return out
'''
LTB_EPOCH, LTB_EPOCHS = 50, 100   # LibMTL's Trainer sets these; past the 1% warm-up: search


@contextlib.contextmanager
def _torchvision_stub():
  """`torchvision.models.utils.load_state_dict_from_url` (gone from torchvision >= 0.13), which
  `LibMTL/model/resnet.py` imports, for the duration of the block only: torch.hub's function
  of that name. torchvision itself is never imported."""
  import torch.hub  # pylint: disable=import-outside-toplevel

  names = ("torchvision", "torchvision.models", "torchvision.models.utils")
  saved = {n: sys.modules.get(n) for n in names}
  for n in names:
    stub = types.ModuleType(n)
    stub.__path__ = []
    sys.modules[n] = stub
  sys.modules["torchvision.models.utils"].load_state_dict_from_url = (
      torch.hub.load_state_dict_from_url)
  try:
    yield
  finally:
    for n, module in saved.items():
      if module is None:
        sys.modules.pop(n, None)
      else:
        sys.modules[n] = module


def libmtl_version() -> str:
  """The installed LibMTL's version; SystemExit with the install line when it is missing."""
  try:
    return importlib.metadata.version("LibMTL")
  except importlib.metadata.PackageNotFoundError:
    raise SystemExit(f"bench_arch: LibMTL is not installed: {INSTALL_HINT}") from None


def load_libmtl() -> types.SimpleNamespace:
  """LibMTL's architecture classes (and `model.resnet`), loaded from the installed wheel under
  a stub `LibMTL` package, so that its `__init__` (trainer, weightings, torchvision) never runs.

  Raises:
    SystemExit: LibMTL is not installed, naming the install line.
  """
  version = libmtl_version()
  root = importlib.util.find_spec("LibMTL").submodule_search_locations[0]
  for name, path in (("LibMTL", root), ("LibMTL.model", os.path.join(root, "model"))):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
  with _torchvision_stub():
    resnet = importlib.import_module("LibMTL.model.resnet")
  architecture = importlib.import_module("LibMTL.architecture")
  ltb = types.ModuleType("LibMTL.architecture.LTB")
  code = compile(LTB_SOURCE, "LibMTL/architecture/LTB.py", "exec")
  exec(code, ltb.__dict__)  # pylint: disable=exec-used
  sys.modules[ltb.__name__] = ltb
  return types.SimpleNamespace(version=version, resnet=resnet, MMoE=architecture.MMoE,
                               CGC=architecture.CGC, PLE=architecture.PLE,
                               DSelect_k=architecture.DSelect_k, HPS=architecture.HPS,
                               Cross_stitch=architecture.Cross_stitch, MTAN=architecture.MTAN,
                               LTB=ltb.LTB, PLE_module=sys.modules["LibMTL.architecture.PLE"])


def torch_modules(setting: Setting, arch: str, libmtl):
  """(encoder_class, decoders) for LibMTL: the setting's expert (or stages) and towers."""
  from torch import nn  # pylint: disable=import-outside-toplevel

  if setting.image:
    encoder_class = lambda: SpecEncoder(setting, mtan_layout=(arch == "mtan"))
    rep = [w for w in setting.layers if isinstance(w, int)][-1]
  else:
    widths = [w for w in setting.layers if isinstance(w, int)]
    dims = [setting.input_shape[0], *widths]

    def mlp_expert():
      """One expert: Linear + ReLU per width."""
      return nn.Sequential(*[m for a, b in zip(dims[:-1], dims[1:])
                             for m in (nn.Linear(a, b), nn.ReLU())])

    def ple_expert():
      """One expert cut into the attributes LibMTL's PLE cuts its levels at: level 0 =
      conv1 (the first Linear), bn1, relu (its ReLU), maxpool; level i = layer<i> (the next
      Linear and its ReLU); layers past the expert's depth are never reached (_PLELevels)."""
      encoder = nn.Module()
      encoder.conv1, encoder.relu = nn.Linear(dims[0], dims[1]), nn.ReLU()
      encoder.bn1, encoder.maxpool = nn.Identity(), nn.Identity()
      for i in range(1, 5):
        setattr(encoder, f"layer{i}", nn.Sequential(nn.Linear(dims[i], dims[i + 1]), nn.ReLU())
                if i < len(widths) else nn.Identity())
      return encoder

    encoder_class = ple_expert if arch == "ple" else mlp_expert
    rep = dims[-1]
  decoders = {}
  for name, n in setting.tasks:
    layers, width = [], rep
    if setting.image:
      pool = nn.AdaptiveMaxPool2d(1) if GLOBAL_POOLING == "max" else nn.AdaptiveAvgPool2d(1)
      layers += [pool, nn.Flatten()]
    for w in setting.towers:
      layers += [nn.Linear(width, w), nn.ReLU()]
      width = w
    layers.append(nn.Linear(width, n))
    decoders[name] = nn.Sequential(*layers)
  return encoder_class, nn.ModuleDict(decoders)


def spec_encoder_class():
  """`SpecEncoder`, defined once torch is imported (the JAX worker never imports torch)."""
  from torch import nn  # pylint: disable=import-outside-toplevel

  class ConvReLU(nn.Sequential):
    def __init__(self, cin, cout):
      super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())

  class Residual(nn.Module):
    """relu(x + conv(relu(conv(x)))): mtl_jax's "r" on images."""

    def __init__(self, c):
      super().__init__()
      self.conv_in = nn.Conv2d(c, c, 3, padding=1)
      self.conv_out = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
      return nn.functional.relu(x + self.conv_out(nn.functional.relu(self.conv_in(x))))

  class SpecEncoder(nn.Module):
    """The conv setting's stages as the ResNet attributes LibMTL reaches into: the first stage
    (conv, pool) as conv1/bn1 (identity)/relu/maxpool, the next four as layer1..4. With
    `mtan_layout` each layer is [conv (the pool ending the previous stage first), residual]
    so that `layer[:-1]` / `layer[-1]` split it as MTAN needs; otherwise a stage is
    [conv, residual, pool] as mtl_jax's stage."""

    def __init__(self, setting: Setting, mtan_layout: bool = False):
      super().__init__()
      stages, current = [], None
      for item in setting.layers:
        if isinstance(item, int):
          current = [item]
          stages.append(current)
        else:
          current.append(item)
      (stem_width, *stem_rest), *rest = stages
      if stem_rest != ["p"] or len(rest) != 4:
        raise ValueError(f"conv stages must be [width, 'p'] and four more, got {stages}")
      self.conv1 = nn.Conv2d(setting.input_shape[-1], stem_width, 3, padding=1)
      self.bn1 = nn.Identity()
      self.relu = nn.ReLU()
      self.maxpool = nn.MaxPool2d(2)
      cin, pool_first = stem_width, False
      for i, (width, *tokens) in enumerate(rest):
        if tokens not in (["r", "p"], ["r"]):
          raise ValueError(f"conv stage {[width, *tokens]}: expected [width, 'r'(, 'p')]")
        conv = ConvReLU(cin, width)
        if mtan_layout:
          first = nn.Sequential(nn.MaxPool2d(2), conv) if pool_first else conv
          layer = nn.Sequential(first, Residual(width))
          pool_first = tokens[-1] == "p"
        else:
          layer = nn.Sequential(conv, Residual(width),
                                *([nn.MaxPool2d(2)] if tokens[-1] == "p" else []))
        setattr(self, f"layer{i + 1}", layer)
        cin = width
      self.feature_dim = cin   # MTAN reads it (2048: bottleneck blocks)

    def forward(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      return self.layer4(self.layer3(self.layer2(self.layer1(x))))

  return SpecEncoder


SpecEncoder = None  # set by torch_loop


def ple_levels_class(libmtl):
  """LibMTL's `_transform_resnet_PLE` with its forward over `levels` levels instead of five."""
  import torch  # pylint: disable=import-outside-toplevel

  base = libmtl.PLE_module._transform_resnet_PLE

  class _PLELevels(base):
    levels = 5

    def forward(self, inputs):  # LibMTL's forward; range(5) -> range(self.levels)
      gate_rep = {task: inputs for task in self.task_name}
      for i in range(self.levels):
        for task in self.task_name:
          if self.forward_task is not None and task != self.forward_task:
            continue
          experts_shared_rep = torch.stack([e(gate_rep[task]) for e in self.shared_layer[str(i)]])
          experts_specific_rep = torch.stack(
              [e(gate_rep[task]) for e in self.specific_layer[str(i)][task]])
          selector = self.gate_specific[task][i](torch.flatten(gate_rep[task], start_dim=1))
          gate_rep[task] = torch.einsum('ij..., ji -> j...',
                                        torch.cat([experts_shared_rep, experts_specific_rep],
                                                  dim=0), selector)
      if self.forward_task is None:
        return gate_rep
      return gate_rep[self.forward_task]

  return _PLELevels


def libmtl_model(arch: str, setting: Setting, libmtl):
  """The LibMTL architecture of this case (module docstring), in training mode."""
  import torch  # pylint: disable=import-outside-toplevel

  global SpecEncoder  # pylint: disable=global-statement
  if SpecEncoder is None:
    SpecEncoder = spec_encoder_class()
  encoder_class, decoders = torch_modules(setting, arch, libmtl)
  names = [name for name, _ in setting.tasks]
  common = dict(task_name=names, encoder_class=encoder_class, decoders=decoders, rep_grad=False,
                multi_input=False, device=torch.device("cpu"))
  img_size = [setting.input_shape[-1], *setting.input_shape[:-1]] if setting.image else [
      setting.input_shape[0]]
  if arch == "mmoe":
    model = libmtl.MMoE(**common, img_size=img_size, num_experts=[NUM_EXPERTS])
  elif arch == "dselect_k":
    model = libmtl.DSelect_k(**common, img_size=img_size, num_experts=[NUM_EXPERTS],
                             num_nonzeros=DSELECT_K["num_nonzeros"], kgamma=DSELECT_K["gamma"])
  elif arch in ("cgc", "ple"):
    shared, per_task = EXPERTS[setting.name]
    cls = libmtl.CGC if arch == "cgc" else libmtl.PLE
    model = cls(**common, img_size=img_size, num_experts=[shared] + [per_task] * len(names))
    if arch == "ple":
      levels = len([w for w in setting.layers if isinstance(w, int)])
      encoder = model.encoder
      encoder.__class__ = ple_levels_class(libmtl)
      encoder.levels = levels
      for task in names:   # drop the gates of the levels the MLP does not have
        gates = list(encoder.gate_specific[task])[:levels]
        encoder.gate_specific[task] = torch.nn.ModuleList(gates)
      for i in range(levels, 5):
        del encoder.shared_layer[str(i)]
        del encoder.specific_layer[str(i)]
  elif arch == "hps":
    model = libmtl.HPS(**common)
  elif arch == "cross_stitch":
    model = libmtl.Cross_stitch(**common)
  elif arch == "mtan":
    model = libmtl.MTAN(**common)
  elif arch == "ltb":
    model = libmtl.LTB(**common)
    model.epoch, model.epochs = LTB_EPOCH, LTB_EPOCHS
  else:
    raise ValueError(f"no LibMTL counterpart for architecture {arch!r}")
  model.train()
  if setting.image:
    model = model.to(memory_format=torch.channels_last)
  return model


def torch_loop(arch: str, setting: Setting, libmtl) -> Callable[[int], float]:
  """run(steps) -> seconds for `steps` steps of LibMTL's training loop (EW, Adam)."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  model = libmtl_model(arch, setting, libmtl)
  optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
  kinds = dict(setting.tasks)

  def convert(batch):
    x = torch.from_numpy(batch["inputs"])
    if setting.image:
      x = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    labels = {t: torch.from_numpy(y) for t, y in batch["labels"].items()}
    labels = {t: (y.float() if kinds[t] == 1 else y.long()) for t, y in labels.items()}
    return x, labels

  batches = [convert(b) for b in random_batches(setting)]

  def loss_of(task, out, y):
    if kinds[task] == 1:
      return F.binary_cross_entropy_with_logits(out.squeeze(-1), y)
    return F.cross_entropy(out, y)

  def step(x, labels):
    optimizer.zero_grad()
    out = model(x)
    losses = torch.stack([loss_of(t, out[t], labels[t]) for t in kinds])
    losses.sum().backward()   # LibMTL's EW: the weights are ones
    optimizer.step()

  def run(steps: int) -> float:
    if steps == 0:
      return float(sum(p.numel() for p in model.parameters() if p.requires_grad))
    start = time.perf_counter()
    for i in range(steps):
      step(*batches[i % NUM_BATCHES])
    return time.perf_counter() - start

  return run


# ----------------------------------------------------------------------------------------------
# Workers.


def worker_main(argv) -> None:
  """Builds the cases, warms them up, prints READY; then answers each line "CASE N" with the
  seconds of N timed steps of that case (N = 0: its parameter count). A case that cannot be
  built prints "error: ..."."""
  parser = argparse.ArgumentParser()
  parser.add_argument("kind", choices=("jax", "torch"))
  parser.add_argument("--cases", required=True, help="comma-separated arch/setting")
  parser.add_argument("--malloc", action="store_true", help="mtl_jax's allocator settings")
  parser.add_argument("--scan", action="store_true", help="JAX: one lax.scan per request")
  args = parser.parse_args(argv)
  if args.kind == "jax":   # as an entry point does, before JAX starts its backend
    from mtl_jax import cpu_tuning  # pylint: disable=import-outside-toplevel
    cpu_tuning.apply()
  if args.malloc:
    import bench_cnn  # pylint: disable=import-outside-toplevel
    if not bench_cnn.tune_malloc("library"):
      raise SystemExit("the allocator settings need glibc")
  libmtl = load_libmtl() if args.kind == "torch" else None
  loops = {}
  for case in args.cases.split(","):
    arch, setting = case.split("/")
    try:
      loops[case] = (torch_loop(arch, SETTINGS[setting], libmtl) if args.kind == "torch"
                     else jax_loop(arch, SETTINGS[setting], scan=args.scan))
      loops[case](WARMUP_STEPS)
    except Exception as e:  # pylint: disable=broad-except
      print(f"error: {args.kind} {case}: {type(e).__name__}: {e}".replace("\n", " "), flush=True)
      raise
  print(READY, flush=True)
  for line in sys.stdin:
    case, steps = line.split()
    print(repr(loops[case](int(steps))), flush=True)


def fresh_environ() -> dict[str, str]:
  """This environment without XLA flags forcing several host devices or the library's CPU
  flag (each worker's own `cpu_tuning.apply` decides)."""
  import bench_cnn  # pylint: disable=import-outside-toplevel

  environ = bench_cnn.fresh_environ()
  flags = " ".join(f for f in environ.get("XLA_FLAGS", "").split()
                   if not f.startswith("--xla_force_host_platform_device_count"))
  environ.pop("XLA_FLAGS", None)
  return {**environ, **({"XLA_FLAGS": flags} if flags else {})}


class Worker:
  """A worker process: `ms(case, steps)` -> milliseconds per step."""

  def __init__(self, kind: str, cases: list[str], malloc: bool = False, scan: bool = False):
    self.kind = kind
    here = os.path.dirname(os.path.abspath(__file__))
    env = fresh_environ()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    self.process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", kind, "--cases",
         ",".join(cases), *(["--malloc"] if malloc else []), *(["--scan"] if scan else [])],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = self.process.stdout.readline().strip()
    if line != READY:
      self.close()
      raise SystemExit(f"bench_arch: the {kind} worker failed to start"
                       f"{': ' + line if line else ''} (exit code {self.process.returncode})")

  def ask(self, case: str, steps: int) -> float:
    self.process.stdin.write(f"{case} {steps}\n")
    self.process.stdin.flush()
    return float(self.process.stdout.readline())

  def ms(self, case: str, steps: int) -> float:
    return 1000 * self.ask(case, steps) / steps

  def params(self, case: str) -> int:
    return int(self.ask(case, 0))

  def close(self) -> None:
    if self.process.stdin and not self.process.stdin.closed:
      self.process.stdin.close()
    self.process.wait()


# ----------------------------------------------------------------------------------------------
# The benchmark.


def summarize(rounds: list[dict[str, float]], sides: list[str]) -> dict[str, float]:
  """Medians over the rounds; ratio = torch_ms / jax_ms per case (and ratio_tuned)."""
  out = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
  for key in list(out):
    if key.endswith("/jax_ms"):
      case = key[:-len("/jax_ms")]
      out[f"{case}/ratio"] = out[f"{case}/torch_ms"] / out[key]
      if "torch_tuned" in sides:
        out[f"{case}/ratio_tuned"] = out[f"{case}/torch_tuned_ms"] / out[key]
      if "jax_scan" in sides:
        out[f"{case}/ratio_scan"] = out[f"{case}/torch_ms"] / out[f"{case}/jax_scan_ms"]
  return dict(sorted(out.items()))


def machine_info(cases: list[str], args) -> dict[str, Any]:
  """The CPU, the library versions and the settings of the run."""
  def version(name):
    try:
      return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      return None

  cpu = platform.processor()
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
  return {
      "cpu": cpu, "cpu_count": os.cpu_count(), "platform": platform.platform(),
      "python": platform.python_version(),
      "versions": {n: version(n) for n in ("jax", "jaxlib", "flax", "optax", "torch", "LibMTL",
                                           "numpy")},
      "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
      "cpu_tuning": os.environ.get("MTL_JAX_CPU_TUNING", "on"),
      "rounds": args.rounds, "steps": {c: steps_of(c, args) for c in cases},
      "batch_size": {s: SETTINGS[s].batch_size for s in args.settings},
      "learning_rate": LEARNING_RATE,
  }


def steps_of(case: str, args) -> int:
  return args.steps or DEFAULT_STEPS[case.split("/")[1]]


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", required=True, help="the JSON file of the results")
  parser.add_argument("--archs", default=",".join(DEFAULT_ARCHS),
                      help=f"comma-separated, of {', '.join(ARCHS)}")
  parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                      help=f"comma-separated, of {', '.join(SETTINGS)}")
  parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
  parser.add_argument("--steps", type=int, default=0,
                      help=f"timed steps per case and side per round (default per setting: "
                           f"{DEFAULT_STEPS})")
  parser.add_argument("--torch-tuned", action="store_true",
                      help="also time PyTorch with mtl_jax's allocator settings")
  parser.add_argument("--scan", action="store_true",
                      help="also time JAX with each measurement's steps in one lax.scan "
                           "dispatch, as train_and_evaluate runs in-memory data")
  args = parser.parse_args(argv)
  args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
  args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
  for a in args.archs:
    if a not in ARCHS:
      parser.error(f"unknown architecture {a!r}; known: {', '.join(ARCHS)}")
  for s in args.settings:
    if s not in SETTINGS:
      parser.error(f"unknown setting {s!r}; known: {', '.join(SETTINGS)}")
  if args.rounds < 1 or args.steps < 0:
    parser.error("--rounds must be positive, --steps at least 0 (0: the defaults)")
  return args


def main(argv=None) -> dict[str, Any]:
  args = parse_args(argv)
  cases = [case_name(a, s) for a in args.archs for s in SETTINGS_OF[a] if s in args.settings]
  if not cases:
    raise SystemExit(f"bench_arch: no case: architectures {args.archs} have no setting among "
                     f"{args.settings}")
  for case in cases:   # fail early, naming the architecture, before any worker starts
    arch, setting = case.split("/")
    check_jax_arch(arch, SETTINGS[setting])
  libmtl_version()   # SystemExit with the install line when LibMTL is missing

  load_start = os.getloadavg()[0]
  print(f"load average at the start: {load_start:.2f} on {os.cpu_count()} CPUs; cases: "
        f"{', '.join(cases)}", file=sys.stderr, flush=True)
  start = time.perf_counter()
  sides = (["jax", "torch"] + (["jax_scan"] if args.scan else [])
           + (["torch_tuned"] if args.torch_tuned else []))
  workers = {}
  try:
    for side in sides:
      workers[side] = Worker("jax" if side.startswith("jax") else "torch", cases,
                             malloc=side == "torch_tuned", scan=side == "jax_scan")
    print(f"workers ready after {time.perf_counter() - start:.0f} s", file=sys.stderr,
          flush=True)
    params = {(case, side): workers[side].params(case) for case in cases
              for side in ("jax", "torch")}
    rounds = []
    for r in range(args.rounds):
      result = {}
      order = cases[r % len(cases):] + cases[:r % len(cases)]
      for i, case in enumerate(order):
        shift = (r + i) % len(sides)
        for side in sides[shift:] + sides[:shift]:   # each side leads in turn
          result[f"{case}/{side}_ms"] = workers[side].ms(case, steps_of(case, args))
      rounds.append(result)
      print(f"round {r + 1}/{args.rounds}: " + "; ".join(
          f"{case} " + " ".join(f"{side} {result[f'{case}/{side}_ms']:.2f}" for side in sides)
          for case in cases) + " (ms/step)", file=sys.stderr, flush=True)
  finally:
    for w in workers.values():
      w.close()
  out: dict[str, Any] = summarize(rounds, sides)
  for case in cases:
    out[f"{case}/jax_params"] = params[case, "jax"]
    out[f"{case}/torch_params"] = params[case, "torch"]
  info = machine_info(cases, args)
  info["load_average_start"], info["load_average_end"] = load_start, os.getloadavg()[0]
  info["seconds"] = round(time.perf_counter() - start, 1)
  out["machine"] = info
  print(f"{args.rounds} rounds in {info['seconds']:.0f} s; load average at the end: "
        f"{info['load_average_end']:.2f}", file=sys.stderr)
  from mtl_jax import atomic  # pylint: disable=import-outside-toplevel

  atomic.write_json(args.out, out)
  print(json.dumps(out, indent=2))
  return out


if __name__ == "__main__":
  if sys.argv[1:2] == ["--worker"]:
    worker_main(sys.argv[2:])
  else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
