"""Learning to Branch (Guo, Lee and Ulbricht, ICML 2020): a tree whose branching is learned.

The network is a tree of layers. Every layer has `branches` nodes (computation blocks of the
same shape, each with its own parameters); each node reads ONE parent in the layer above, and
which one is learned: child c of layer i holds logits theta_i[c, :] over the parents of layer
i - 1, and during the search it reads

    sum_j alpha_i[c, j] * parent_j,     alpha_i[c] = Gumbel-softmax(theta_i[c], tau)

a sample from the categorical distribution softmax(theta_i[c]) made differentiable. The leaves
are the task heads: one node per task, each choosing its parent in the last layer the same way,
so two tasks share every layer above the point where their paths split. After the search the
tree is fixed to the most probable parents (the argmax of every theta) and trained on as that
tree (every node is still computed, batched; the ones off every task's path get no
gradient); evaluation (`train=False`) always runs the current argmax tree.

    backbone (optional, shared) -> layer 0: branches nodes, all read the backbone's output
                                -> layer i: branches nodes, each picks one node of layer i - 1
                                -> head t (task t's leaf): picks one node of the last layer

**Layers from the spec.** `shared_layers` is cut into tree layers: every width (int) or
residual block ("r") starts a new layer; dropout ("d") and pooling ("p") join the layer before
them (leading ones join the first). `(256,)` is one tree layer of `branches` Dense(256) nodes
from which each head picks its parent (a search over "share or not"); `(256, "d", 128)` is two.
The nodes of a layer are one `SpecStack` with parameters stacked on a leading node axis
(`mtl_jax.models.stacked`), on vectors [B, D] and images [B, H, W, C] alike, batched with
`nn.vmap`; on XLA:CPU the image nodes run as an unrolled loop over the nodes (the same stacked
parameters), because there vmapped convolutions become batched (grouped) convolutions, which
are very slow (a 3x3 conv's forward and backward, batch 32, two nodes: 600 / 160 / 110 ms on
32x32x64 / 8x8x256 / 4x4x512 maps against 63 / 35 / 42 ms in a loop). `task_layers` build the
heads.

**The search.** The model counts its own training calls in the collection "branching"
(`step`, an int32 scalar; it lives in `TrainState.model_state`, so it is checkpointed and a run
resumes exactly). Call s (0-based) of `apply(..., train=True, mutable=...)` runs

- s < warmup_steps: every child reads the mean of its parents (LibMTL's all-ones warm-up,
  normalised); the logits get no gradient;
- warmup_steps <= s < search_steps: a Gumbel-softmax sample with temperature
  tau(s) = temperature * (final_temperature / temperature) ** ((s - warmup_steps) /
  (search_steps - warmup_steps)), a geometric decay from `temperature` to `final_temperature`;
  `hard=True`: the one-hot sample in the forward pass and the soft sample's gradient
  (straight-through), `hard=False`: the soft sample itself. One sample per call, shared by the
  batch; the noise comes from the "dropout" rng stream (the only one training passes). Without
  that rng the sample is noise-free (the argmax, or softmax(theta / tau) when soft);
- s >= search_steps: the fixed tree (argmax, no noise, no gradient to the logits).

Only calls with `train=True` and the collection mutable advance the counter. Applied without
the collection (a bare `{"params": ...}`), the model cannot tell where the search stands and
runs the fixed tree. `search_steps` counts training steps, not epochs: set it to a part of
`num_steps` (the default, 1000, is half of the digits config's 2000). `parents(model, params)` reads the current tree; `branch_probabilities`
the distributions it is the argmax of.

**Ownership.** The backbone, the tree's nodes and the layers' logits are shared (any task may
route through them, as LibMTL shares the whole encoder); task t's leaf logits (`leaf_<t>`,
over the last layer's nodes) and its head belong to task t. `encode` returns {task: Z_t}, the
parent task t's head reads (a leaf's logits shape only its own Z_t); `decode` applies the
heads.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import parts, stacked
from mtl_jax.models.backbones import BACKBONE
from mtl_jax.models.base import ModelSpec
from mtl_jax.models.specs import SpecStack, parse_spec
from mtl_jax.tasks import Task

__all__ = ["LearningToBranch", "branch_probabilities", "branch_weights", "make", "parents",
           "temperature_at", "tree_layers"]

COLLECTION = "branching"   # the model's own mutable collection: {"step": i32[]}
LAYER = "layer_"           # layer_<i>: the stacked nodes of tree layer i (shared)
BRANCH = "branch_"         # branch_<i>: logits [branches, branches] of layer i >= 1 (shared)
LEAF = "leaf_"             # leaf_<task>: the task's logits [branches] over the last layer


def tree_layers(layers: Sequence[Any]) -> tuple[tuple, ...]:
  """The tree layers of a layer spec: a new layer at every width or "r"; "d" and "p" join
  the layer before them (leading ones the first).

  Raises:
    ValueError: a bad spec, or one without a width or "r".
  """
  groups, lead = [], []
  for item in parse_spec(layers):
    if isinstance(item, int) or item == "r":
      groups.append(list(lead) + [item])
      lead = []
    elif groups:
      groups[-1].append(item)
    else:
      lead.append(item)
  if not groups:
    raise ValueError(f"model 'ltb': shared_layers {tuple(layers)!r} has no layer to branch "
                     "(a width or 'r')")
  return tuple(tuple(g) for g in groups)


def temperature_at(step, *, temperature: float, final_temperature: float, warmup_steps: int,
                   search_steps: int) -> jnp.ndarray:
  """tau at training call `step`: geometric from `temperature` (at warmup_steps) to
  `final_temperature` (at search_steps)."""
  span = max(search_steps - warmup_steps, 1)
  frac = jnp.clip((jnp.asarray(step, jnp.float32) - warmup_steps) / span, 0.0, 1.0)
  return temperature * (final_temperature / temperature) ** frac


def branch_weights(logits: jnp.ndarray, *, tau, key=None, hard: bool = True) -> jnp.ndarray:
  """f32[..., parents]: a Gumbel-softmax sample over the last axis of `logits` at temperature
  `tau` (no noise without `key`); hard: the one-hot of its argmax in the forward pass, the soft
  sample's gradient (straight-through)."""
  scores = logits
  if key is not None:
    scores = scores + jax.random.gumbel(key, logits.shape, logits.dtype)
  soft = jax.nn.softmax(scores / tau, axis=-1)
  if not hard:
    return soft
  one_hot = jax.nn.one_hot(jnp.argmax(scores, axis=-1), logits.shape[-1], dtype=soft.dtype)
  return one_hot + (soft - jax.lax.stop_gradient(soft))


def _fixed(logits: jnp.ndarray) -> jnp.ndarray:
  """The fixed tree's weights: the one-hot argmax, no gradient to the logits."""
  return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=logits.dtype)


class _Nodes(nn.Module):
  """One tree node: the layer group's spec on its input (stacked over the node axis by
  `stacked.apply_stacked`)."""
  layers: tuple
  dropout_rate: float
  train: bool

  @nn.compact
  def __call__(self, x):
    return SpecStack(self.layers, self.dropout_rate, name="layers")(x, train=self.train)


class LearningToBranch(nn.Module):
  """({task: output}) from a learned branching tree (see the module docstring).

  Attributes:
    tasks: the tasks, in order.
    spec: the layer specs (`parts.layer_spec`): backbone, shared_layers (the tree), heads.
    backbone, heads: a user's modules replacing the spec-built ones (`parts`).
    branches: nodes per tree layer.
    search_steps, warmup_steps: training calls of the search and of its warm-up.
    temperature, final_temperature: the Gumbel-softmax temperature's start and end.
    hard: straight-through one-hot samples (else soft samples).
  """
  tasks: Sequence[Task]
  spec: ModelSpec
  backbone: nn.Module | None = None
  heads: Mapping[str, nn.Module] | None = None
  branches: int = 2
  search_steps: int = 1000
  warmup_steps: int = 0
  temperature: float = 5.0
  final_temperature: float = 0.5
  hard: bool = True

  @property
  def global_pooling(self) -> str:
    return self.spec.global_pooling

  @property
  def freeze_backbone(self) -> bool:
    return self.spec.freeze_backbone

  def owner(self, path: Sequence[str]) -> str | None:
    """None (shared) for the backbone, the nodes and the layers' logits; the task for its
    leaf logits and its head."""
    name = path[0]
    for task in self.tasks:
      if name in (LEAF + task.name, f"head_{task.name}", f"heads_{task.name}"):
        return task.name
    if name == BACKBONE or name.startswith((LAYER, BRANCH)):
      return None
    raise ValueError(f"model 'ltb': no owner for parameter {'/'.join(path)!r}")

  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    return self._forward(x, None, train, "all")

  def encode(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    """{task: Z_t}: the node of the last tree layer task t's leaf reads (mixed while
    searching)."""
    return self._forward(x, None, train, "encode")

  def decode(self, reps: Mapping[str, jnp.ndarray], *, train: bool = False) -> dict:
    """{task: output}, head t on reps[t]."""
    return self._forward(None, reps, train, "decode")

  def _phase(self, train: bool):
    """("warmup" | "search" | "fixed", the training call's index or None)."""
    if not self.has_variable(COLLECTION, "step") and not self.is_initializing():
      return "fixed", None
    counter = self.variable(COLLECTION, "step", lambda: jnp.zeros((), jnp.int32))
    step = counter.value
    if not train:
      return "fixed", step
    if self.is_mutable_collection(COLLECTION) and not self.is_initializing():
      counter.value = step + 1
    return None, step

  def _weights(self, logits: jnp.ndarray, phase, step) -> jnp.ndarray:
    if phase == "fixed":
      return _fixed(jax.lax.stop_gradient(logits))
    warm = jnp.full_like(logits, 1.0 / logits.shape[-1])
    fixed = _fixed(jax.lax.stop_gradient(logits))
    tau = temperature_at(step, temperature=self.temperature,
                         final_temperature=self.final_temperature,
                         warmup_steps=self.warmup_steps, search_steps=self.search_steps)
    key = self.make_rng("dropout") if self.has_rng("dropout") else None
    sample = branch_weights(logits, tau=tau, key=key, hard=self.hard)
    out = jnp.where(step < self.search_steps, sample, fixed)
    return jnp.where(step < self.warmup_steps, warm, out) if self.warmup_steps else out

  @nn.compact
  def _forward(self, x, reps, train: bool, part: str):
    spec, names = self.spec, [t.name for t in self.tasks]
    if part != "decode":
      phase, step = self._phase(train)
      x = parts.apply_backbone(spec, self.backbone, x, train=train)
      k = self.branches
      h = jnp.broadcast_to(x, (k,) + x.shape)
      for i, group in enumerate(tree_layers(spec.shared_layers)):
        if i:
          logits = self.param(f"{BRANCH}{i}", nn.initializers.zeros, (k, k))
          h = jnp.einsum("cp,p...->c...", self._weights(logits, phase, step).astype(h.dtype), h)
        h = stacked.apply_stacked(_Nodes(group, spec.dropout_rate, train, name=f"{LAYER}{i}"),
                                  k, h)
      leaves = jnp.stack([self.param(LEAF + n, nn.initializers.zeros, (k,)) for n in names])
      weights = self._weights(leaves, phase, step).astype(h.dtype)
      reps = {n: jnp.einsum("p,p...->...", weights[t], h) for t, n in enumerate(names)}
      if part == "encode":
        return reps
    return {t.name: parts.apply_head(spec, self.heads, t, reps[t.name], train=train)
            for t in self.tasks}


def branch_probabilities(model: LearningToBranch, params: Mapping) -> dict:
  """{"branch_<i>": f32[branches, branches] per layer i >= 1, "leaves": f32[T, branches]}: the
  distributions over parents, softmax(theta), that the search samples and the fixed tree is the
  argmax of."""
  out = {name: jax.nn.softmax(value, axis=-1) for name, value in params.items()
         if name.startswith(BRANCH)}
  out["leaves"] = jax.nn.softmax(jnp.stack([params[LEAF + t.name] for t in model.tasks]), -1)
  return out


def parents(model: LearningToBranch, params: Mapping) -> dict:
  """The fixed tree: {"layer_<i>": (parent of each node,) for i >= 1, task: its parent in the
  last layer}."""
  out = {}
  for name, value in sorted(params.items()):
    if name.startswith(BRANCH):
      out[LAYER + name[len(BRANCH):]] = tuple(int(j) for j in jnp.argmax(value, axis=-1))
  for task in model.tasks:
    out[task.name] = int(jnp.argmax(params[LEAF + task.name]))
  return out


def _require(ok: bool, name: str, what: str, value) -> None:
  if not ok:
    raise ValueError(f"model 'ltb': {name} must be {what}, got {value!r}")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def make(tasks: Sequence[Task], spec: ModelSpec, *, branches: int | None = None,
         search_steps: int = 1000, warmup_steps: int = 0, temperature: float = 5.0,
         final_temperature: float = 0.5, hard: bool = True) -> LearningToBranch:
  """The registry's factory (`config.model.name = "ltb"`); `branches` defaults to the number
  of tasks (as LibMTL).

  Raises:
    ValueError: a bad hyper-parameter or layer spec, naming it.
  """
  branches = len(tasks) if branches is None else branches
  _require(_is_int(branches) and branches >= 1, "branches", "an int >= 1", branches)
  _require(_is_int(search_steps) and search_steps >= 0, "search_steps", "an int >= 0",
           search_steps)
  _require(_is_int(warmup_steps) and 0 <= warmup_steps <= search_steps, "warmup_steps",
           f"an int in [0, search_steps = {search_steps}]", warmup_steps)
  for name, value in (("temperature", temperature), ("final_temperature", final_temperature)):
    _require(_is_number(value) and value > 0, name, "a number > 0", value)
  _require(isinstance(hard, bool), "hard", "True or False", hard)
  tree_layers(spec.shared_layers)
  fields = parts.module_fields(tasks, spec)
  return LearningToBranch(tuple(tasks), fields["spec"], fields["backbone"], fields["heads"],
                          branches, search_steps, warmup_steps, float(temperature),
                          float(final_temperature), hard)
