"""The building blocks of the mixture-of-experts architectures (MMoE, CGC, PLE, DSelect-k).

Experts are *batched*: a bank of E experts is one `SpecStack` vectorised over a leading expert
axis (`nn.vmap`, parameters stacked as `[E, ...]`), so the E experts run as a few large
operations (one matmul per layer over all experts), not a Python loop. The exception
(`mtl_jax.models.stacked`): on XLA:CPU a bank of conv experts (image inputs) runs as an
unrolled loop over the experts, one convolution per expert, with the same stacked parameters,
because vmapped convolutions become batched (grouped) convolutions, which XLA:CPU runs very
slowly (a 3x3 conv's forward and backward, batch 32, two members: 600 / 160 / 110 ms on
32x32x64 / 8x8x256 / 4x4x512 maps against 63 / 35 / 42 ms in a loop):

    # inside a compact method
    bank = expert_bank(spec.shared_layers, spec.dropout_rate, 8, train=train, name="experts")
    f = bank(x)                                              # [B, ...] -> [E, B, ...]
    g = softmax_gate(gate_input(x), 8, name="gate_digit")    # [B, E], rows sum to 1
    z = mix(g, f)                                            # [B, ...]: sum_e g[:, e] f[e]

The same bank takes one input read by every expert (`per_expert_inputs=False`) or one input per
expert (`[E, B, ...]`). Experts built from a spec of ints are Dense+ReLU stacks on vectors and
3x3-conv stacks on images (`mtl_jax.models.specs`); the mixtures of feature maps keep their
shape. A bank's parameters sit under its name with the `SpecStack` under `layers`:
`params[name]["layers"]["dense_0"]["kernel"]` has shape `[E, D_in, D_out]`.

Banks of one spec that read the SAME input (CGC's shared and task banks, PLE's first level) run
fused (`fused_banks`): their stacked parameters are concatenated along the expert axis at apply
time and the spec's layers run once over all their experts (one matmul per layer, as MMoE's
one bank), because at census size (499 inputs, Dense [16, 8]) per-op overhead dominates. Each
bank keeps its own parameters (name, `[E, ...]` shape, initial values), so its gradient lands
in its own tree; `mix_groups` mixes a gate's groups of the concatenation with one einsum.

Gates read a flat vector per example (`gate_input`: the experts' input flattened to `[B, D]`).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import parts, stacked
from mtl_jax.models.backbones import BACKBONE
from mtl_jax.models.base import ModelSpec
from mtl_jax.models.specs import SpecStack, parse_spec
from mtl_jax.tasks import Task

__all__ = ["EXPERTS", "expert_bank", "fused_banks", "MixtureModel", "check_count", "gate_input",
           "mix", "mix_banks", "mix_groups", "model_fields", "softmax_gate"]

EXPERTS = "experts"  # the name of the shared expert bank (MMoE, CGC, DSelect-k)


class _Expert(nn.Module):
  """One expert: the spec's layers."""
  spec: Sequence[Any]
  dropout_rate: float
  train: bool

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return SpecStack(tuple(self.spec), self.dropout_rate, name="layers")(x, train=self.train)


def expert_bank(spec: Sequence[Any], dropout_rate: float, num_experts: int, *, train: bool,
                name: str, per_expert_inputs: bool = False,
                batched: bool | None = None) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """Inside a compact method: `num_experts` experts of `spec` evaluated together, a function
  (the stack's parameters named `name`) mapping [B, ...] (or [E, B, ...] with
  `per_expert_inputs`) to [E, B, ...]. Each expert has its own parameters (initialised
  independently) and its own dropout masks. `batched`: `stacked.apply_stacked`'s (None: vmap,
  except image inputs on XLA:CPU, an unrolled loop)."""
  member = _Expert(tuple(spec), dropout_rate, train, name=name)
  return lambda x: stacked.apply_stacked(member, num_experts, x,
                                         in_axes=0 if per_expert_inputs else None,
                                         batched=batched)


def fused_banks(module: nn.Module, banks: Sequence[tuple[str, int]], spec: Sequence[Any],
                dropout_rate: float, x: jnp.ndarray, *, train: bool,
                batched: bool | None = None) -> jnp.ndarray:
  """Inside a compact method of `module`: banks [(name, number of experts)] of experts of `spec`,
  all reading x [B, ...], evaluated as ONE stack: f32[sum E, B, ...], the banks' experts in the
  given order (banks of 0 experts have none and no parameters).

  The parameters are exactly `expert_bank`'s, one tree per bank (`params[name]["layers"]`,
  `[E, ...]`): at init they are created by `expert_bank` (the same initial values); at apply
  they are read, concatenated along the expert axis and the spec's layers run once over all the
  experts (`stacked.map_members`: vmap; an unrolled loop for images on XLA:CPU), so each
  bank's gradient flows back through the concatenation into its own tree. Every expert draws
  its own dropout mask (one "dropout" key split per expert; not `expert_bank`'s masks)."""
  banks = [(name, int(n)) for name, n in banks if n > 0]
  if module.is_initializing():
    for name, n in banks:
      expert_bank(spec, dropout_rate, n, train=train, name=name, batched=batched)(x)
  params = module.variables["params"]
  missing = [name for name, _ in banks if name not in params]
  if missing:
    raise ValueError(f"no parameters for the expert banks {missing}")
  trees = [params[name]["layers"] for name, _ in banks]
  tree = trees[0] if len(trees) == 1 else jax.tree.map(
      lambda *leaves: jnp.concatenate(leaves, axis=0), *trees)
  total = sum(n for _, n in banks)
  layers = SpecStack(tuple(spec), dropout_rate, parent=None)
  if train and dropout_rate > 0 and "d" in parse_spec(spec):
    keys = jax.random.split(module.make_rng("dropout"), total)
    apply = lambda p, h, key: layers.apply({"params": p}, h, train=True, rngs={"dropout": key})
    return stacked.map_members(apply, tree, x, keys, in_axes=(None, 0), batched=batched)
  apply = lambda p, h: layers.apply({"params": p}, h, train=train)
  return stacked.map_members(apply, tree, x, in_axes=None, batched=batched)


def gate_input(x: jnp.ndarray) -> jnp.ndarray:
  """f32[B, D]: what a gate reads, `x` flattened per example."""
  return x.reshape(x.shape[0], -1)


def softmax_gate(x_flat: jnp.ndarray, num_experts: int, *, name: str) -> jnp.ndarray:
  """Inside a compact method: softmax(Dense(x_flat)) over `num_experts`, f32[B, E] (a Dense
  named `name`)."""
  return nn.softmax(nn.Dense(num_experts, name=name)(x_flat), axis=-1)


def mix(weights: jnp.ndarray, experts: jnp.ndarray) -> jnp.ndarray:
  """sum_e weights[b, e] * experts[e, b, ...]: weights f32[B, E], experts f32[E, B, ...]."""
  return jnp.einsum("be,eb...->b...", weights, experts)


def mix_banks(weights: jnp.ndarray, banks: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """`mix` over the concatenation of `banks` along the expert axis (weights f32[B, sum E_i]),
  without materialising the concatenation: one einsum per bank."""
  out, start = None, 0
  for bank in banks:
    if bank.shape[0] == 0:
      continue
    part = mix(weights[:, start:start + bank.shape[0]], bank)
    out = part if out is None else out + part
    start += bank.shape[0]
  if start != weights.shape[-1]:
    raise ValueError(f"{weights.shape[-1]} gate weights for {start} experts")
  return out


def mix_groups(weights: jnp.ndarray, experts: jnp.ndarray,
               groups: Sequence[tuple[int, int]]) -> jnp.ndarray:
  """`mix` of the experts in `groups` [(start, count)] (ascending, disjoint) of
  experts f32[E, B, ...], weights f32[B, sum count] over them in that order: the weights are
  spread over the E experts (zeros elsewhere) and mixed with one einsum."""
  pieces, used, end = [], 0, 0
  zeros = lambda n: jnp.zeros((weights.shape[0], n), weights.dtype)
  for start, count in groups:
    if count == 0:
      continue
    if start < end:
      raise ValueError(f"groups {list(groups)} are not ascending and disjoint")
    if start > end:
      pieces.append(zeros(start - end))
    pieces.append(weights[:, used:used + count])
    used, end = used + count, start + count
  if used != weights.shape[-1] or end > experts.shape[0]:
    raise ValueError(f"{weights.shape[-1]} gate weights for groups {list(groups)} of "
                     f"{experts.shape[0]} experts")
  if end < experts.shape[0]:
    pieces.append(zeros(experts.shape[0] - end))
  return mix(pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-1), experts)


def check_count(model: str, key: str, value: Any, *, minimum: int) -> int:
  """`value` as an int >= minimum, else ValueError naming `key` (bools and floats refused)."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < minimum):
    raise ValueError(f"model {model!r}: {key} must be an integer >= {minimum}, got {value!r}")
  return int(value)


class MixtureModel(nn.Module):
  """What the four mixture-of-experts models share: backbone -> gated expert mixtures
  {task: Z_t} -> one head per task, and the contract's methods around one compact `_forward`
  (so `__call__`, `encode`, `decode`, `gates` read the same parameters).

  A subclass defines `_route(h, *, train, part)`: from the backbone's output `h`, the
  mixtures {task: Z_t} (part "all" or "encode"), its gates {gate name: f32[B, E]} ("gates"),
  or anything else its own methods ask for. Its parameters are the backbone (`BACKBONE`), the
  shared experts (`EXPERTS`), and modules named `<something>_<task>` for each task.

  Attributes:
    tasks: the tasks, in order.
    spec: the layer specs (`parts.layer_spec`): backbone_spec, shared_layers (one expert),
      task_layers (each tower's hidden layers), dropout_rate, global_pooling, freeze_backbone.
    backbone: a user's module replacing `spec.backbone_spec` (shared, under `BACKBONE`).
    heads: {task: a user's module} replacing the spec-built towers.
  """
  tasks: Sequence[Task]
  spec: ModelSpec = ModelSpec()
  backbone: nn.Module | None = None
  heads: Any = None

  shared_modules = (BACKBONE, EXPERTS)

  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    return self._forward(x, None, train, "all")

  def encode(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    """{task: Z_t}: each task's gated mixture of expert outputs ([B, D] or [B, H, W, C])."""
    return self._forward(x, None, train, "encode")

  def decode(self, reps, *, train: bool = False) -> dict:
    """{task: output}: tower t on reps[t]."""
    return self._forward(None, reps, train, "decode")

  def gates(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    """{gate name: f32[B, E]}: each gate's weights over the experts it mixes."""
    return self._forward(x, None, train, "gates")

  @property
  def global_pooling(self) -> str:
    return self.spec.global_pooling

  def _route(self, h: jnp.ndarray, *, train: bool, part: str):
    raise NotImplementedError

  @nn.compact
  def _forward(self, x, reps, train: bool, part: str):
    if part != "decode":
      h = parts.apply_backbone(self.spec, self.backbone, x, train=train)
      routed = self._route(h, train=train, part=part)
      if part != "all":
        return routed
      reps = routed
    return {task.name: parts.apply_head(self.spec, self.heads, task, reps[task.name],
                                        train=train)
            for task in self.tasks}

  def bank(self, num_experts: int, *, train: bool, name: str, layers: Sequence[Any] | None = None,
           per_expert_inputs: bool = False) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """An `expert_bank` of `num_experts` experts of `layers` (default `spec.shared_layers`;
    call it inside `_route`)."""
    layers = self.spec.shared_layers if layers is None else layers
    return expert_bank(layers, self.spec.dropout_rate, num_experts, train=train, name=name,
                       per_expert_inputs=per_expert_inputs)


def model_fields(tasks: Sequence[Task], spec: ModelSpec) -> dict:
  """{"tasks", "spec", "backbone", "heads"}: a factory's keyword arguments for a
  `MixtureModel`."""
  return {"tasks": tuple(tasks), **parts.module_fields(tasks, spec)}
