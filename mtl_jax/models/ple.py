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
without one). **Every level's experts are the whole `spec.shared_layers`** (as in the paper
and DeepCTR's PLE, where each level is an extraction network of the same expert shape), so
with `shared_layers=(16, 8)` and `num_levels=2` an input goes through [16, 8] twice. (LibMTL's
PLE instead splits one ResNet encoder over its levels, and has no shared gate: its shared
experts read each task's branch separately.) With one level PLE is CGC (the same outputs for
the same parameters, named `level0_...` here).

Hyper-parameters (`config.model.kwargs`): `num_levels` (default 2, >= 1),
`num_shared_experts` (default 4, >= 1, per level) and `num_task_experts` (default 2, >= 0,
per level; an int for every task, or {task: int}).

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
from mtl_jax.tasks import Task

NUM_LEVELS = 2


def level_prefix(level: int) -> str:
  """The start of every name of level `level`'s modules."""
  return f"level{level}_"


class PLE(experts.MixtureModel):
  """PLE (see the module docstring): `num_levels` CGC levels joined by shared gates."""
  num_levels: int = NUM_LEVELS
  num_shared_experts: int = cgc.NUM_SHARED_EXPERTS
  num_task_experts: Any = cgc.NUM_TASK_EXPERTS  # {task: int}, filled in by `make`

  @property
  def shared_modules(self) -> tuple:
    names = [BACKBONE]
    for level in range(self.num_levels):
      names.append(f"{level_prefix(level)}{experts.EXPERTS}")
      if level < self.num_levels - 1:
        names.append(f"{level_prefix(level)}shared_gate")
    return tuple(names)

  def _route(self, h: jnp.ndarray, *, train: bool, part: str):
    counts = cgc.task_counts("ple", self.num_task_experts, self.tasks)
    shared_in, task_in, gates = h, {t.name: h for t in self.tasks}, {}
    for level in range(self.num_levels):
      task_in, shared_in, level_gates = cgc.extraction_level(
          self, shared_in, task_in, num_shared=self.num_shared_experts, num_task=counts,
          train=train, prefix=level_prefix(level), shared_gate=level < self.num_levels - 1)
      gates.update(level_gates)
    return gates if part == "gates" else task_in


def make(tasks: Sequence[Task], spec: ModelSpec, *, num_levels: int = NUM_LEVELS,
         num_shared_experts: int = cgc.NUM_SHARED_EXPERTS,
         num_task_experts: int | Mapping[str, int] = cgc.NUM_TASK_EXPERTS) -> PLE:
  """The registry's factory (`config.model.name = "ple"`).

  Raises:
    ValueError: naming the bad hyper-parameter (num_levels < 1, num_shared_experts < 1,
      num_task_experts < 0 or not per task).
  """
  num_levels = experts.check_count("ple", "num_levels", num_levels, minimum=1)
  num_shared = experts.check_count("ple", "num_shared_experts", num_shared_experts, minimum=1)
  counts = cgc.task_counts("ple", num_task_experts, tasks)
  return PLE(**experts.model_fields(tasks, spec), num_levels=num_levels,
             num_shared_experts=num_shared, num_task_experts=counts)
