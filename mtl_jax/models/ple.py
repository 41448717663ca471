"""Progressive Layered Extraction, PLE (Tang et al., "Progressive Layered Extraction (PLE): A
Novel Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020, section
4.3).

PLE stacks L extraction networks (CGC levels, `mtl_jax.models.cgc`). Level j has m_s shared
experts and m_t experts of each task t. Task t's gate mixes the shared experts and t's own,
reading t's branch; a *shared* gate mixes every expert of the level (shared and all tasks'),
reading the shared branch (the paper's equations 5-6):

    g_t^j(x)  = w_t^j(g_t^(j-1)(x)) S_t^j(x)       S_t^j = [shared experts, t's experts]
    g_s^j(x)  = w_s^j(g_s^(j-1)(x)) S_s^j(x)       S_s^j = [shared experts, every task's]

with g_t^0 = g_s^0 = x; each level's experts read their branch (shared experts g_s^(j-1),
task t's experts g_t^(j-1)) and each gate is a softmax of a Dense of its branch, flattened.
The last level has only task gates, and tower t reads Z_t = g_t^L(x): y_t = h_t(Z_t).

x is the backbone's output (`spec.backbone_spec` or a user's `backbone`; the raw input
without one). The first level's banks all read x and run fused as one batched stack
(`experts.fused_banks`: per-op overhead dominates at census size); the later levels' banks
read different branches and run one `expert_bank` each.

**The levels split the expert spec** `spec.shared_layers`: level j's experts are the j-th
group of its consecutive layers (each int or "r" starts a layer; a "d" or "p" stays with the
layer before it), so the gates sit between an expert's layers and an input crosses the same
depth as in MMoE or CGC with the same spec. By default there is one level per layer:
`shared_layers=(16, 8)` makes a two-level PLE whose experts are [16] then [8] (LibMTL's PLE
likewise cuts one encoder into its levels; it has no shared gate, its shared experts read each
task's branch separately). `num_levels` groups the layers into fewer levels, as evenly as
possible (the earlier levels take the extra layers): (64, 32, 16) with `num_levels=2` makes
levels [64, 32] and [16]. With one level PLE is CGC (the same outputs for the same parameters,
named `level0_...` here); so is the default on a one-layer spec such as digits' (256,).

Hyper-parameters (`config.model.kwargs`): `num_levels` (default None: one per layer of
`shared_layers`; else 1 <= num_levels <= its number of layers), `num_shared_experts` (default
4, >= 1, per level) and `num_task_experts` (default 2, >= 0, per level; an int for every task,
or {task: int}).

Parameters: `backbone`, `level<j>_experts` and `level<j>_shared_gate` (j < L - 1) are shared;
`level<j>_experts_<task>`, `level<j>_gate_<task>` and `head_<task>` belong to their task.
`encode` -> {task: Z_t}; `gates` -> {gate name: f32[B, E]} for every gate of every level
(shared experts first, then the tasks' in task order).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax.numpy as jnp

from mtl_jax.models import cgc, experts
from mtl_jax.models.backbones import BACKBONE
from mtl_jax.models.base import ModelSpec
from mtl_jax.models.specs import parse_spec
from mtl_jax.tasks import Task

NUM_LEVELS = None  # one level per layer of the expert spec


def level_prefix(level: int) -> str:
  """The start of every name of level `level`'s modules."""
  return f"level{level}_"


class PLE(experts.MixtureModel):
  """PLE (see the module docstring): CGC levels joined by shared gates, level j's experts of
  `levels[j]`'s layers."""
  levels: Sequence[Any] = ()  # a layer spec per level, filled in by `make` (`level_layers`)
  num_shared_experts: int = cgc.NUM_SHARED_EXPERTS
  num_task_experts: Any = cgc.NUM_TASK_EXPERTS  # {task: int}, filled in by `make`

  @property
  def shared_modules(self) -> tuple:
    names = [BACKBONE]
    for level in range(len(self.levels)):
      names.append(f"{level_prefix(level)}{experts.EXPERTS}")
      if level < len(self.levels) - 1:
        names.append(f"{level_prefix(level)}shared_gate")
    return tuple(names)

  def _route(self, h: jnp.ndarray, *, train: bool, part: str):
    counts = cgc.task_counts("ple", self.num_task_experts, self.tasks)
    shared_in, task_in, gates = h, {t.name: h for t in self.tasks}, {}
    for level, layers in enumerate(self.levels):
      task_in, shared_in, level_gates = cgc.extraction_level(
          self, shared_in, task_in, num_shared=self.num_shared_experts, num_task=counts,
          train=train, prefix=level_prefix(level), shared_gate=level < len(self.levels) - 1,
          layers=layers)
      gates.update(level_gates)
    return gates if part == "gates" else task_in


def level_layers(shared_layers: Sequence[Any], num_levels: int | None) -> tuple:
  """The expert spec of each level: `shared_layers` cut between its layers into `num_levels`
  groups (None: one per layer), the earlier levels taking the extra layers.

  Raises:
    ValueError: naming num_levels (below 1, or more levels than layers), or shared_layers
      (no layer to cut).
  """
  layers, pending = [], []
  for token in parse_spec(shared_layers):
    if token in ("d", "p"):  # stays with the layer before it
      (layers[-1] if layers else pending).append(token)
    else:
      layers.append(pending + [token])
      pending = []
  if not layers:
    raise ValueError(f"model 'ple': shared_layers {tuple(shared_layers)!r} has no layer to "
                     "make experts of")
  if num_levels is None:
    num_levels = len(layers)
  num_levels = experts.check_count("ple", "num_levels", num_levels, minimum=1)
  if num_levels > len(layers):
    raise ValueError(f"model 'ple': num_levels={num_levels} exceeds the {len(layers)} layers "
                     f"of shared_layers {tuple(shared_layers)!r} (the levels split them)")
  sizes = [len(layers) // num_levels + (level < len(layers) % num_levels)
           for level in range(num_levels)]
  starts = [sum(sizes[:level]) for level in range(num_levels)]
  return tuple(tuple(token for layer in layers[start:start + size] for token in layer)
               for start, size in zip(starts, sizes))


def make(tasks: Sequence[Task], spec: ModelSpec, *, num_levels: int | None = NUM_LEVELS,
         num_shared_experts: int = cgc.NUM_SHARED_EXPERTS,
         num_task_experts: int | Mapping[str, int] = cgc.NUM_TASK_EXPERTS) -> PLE:
  """The registry's factory (`config.model.name = "ple"`).

  Raises:
    ValueError: naming the bad hyper-parameter (num_levels < 1 or over the layers of
      shared_layers, num_shared_experts < 1, num_task_experts < 0 or not per task).
  """
  levels = level_layers(spec.shared_layers, num_levels)
  num_shared = experts.check_count("ple", "num_shared_experts", num_shared_experts, minimum=1)
  counts = cgc.task_counts("ple", num_task_experts, tasks)
  return PLE(**experts.model_fields(tasks, spec), levels=levels, num_shared_experts=num_shared,
             num_task_experts=counts)
