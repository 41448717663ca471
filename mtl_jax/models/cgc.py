"""Customized Gate Control, CGC (Tang et al., "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020, section 4.2).

Experts are split into m_s shared experts, read by every task, and m_t experts of task t's
own; task t's gate is a softmax over the shared experts and its own (the paper's equations
1-4):

    S_t(x) = [E_s,1(x), ..., E_s,m_s(x), E_t,1(x), ..., E_t,m_t(x)]
    g_t(x) = softmax(W_t x) in R^(m_s + m_t),    Z_t = g_t(x)^T S_t(x),    y_t = h_t(Z_t)

x is the experts' input: the backbone's output (`spec.backbone_spec` or a user's `backbone`;
the raw input without one), flattened per example for the gates. Every expert is a
`SpecStack` of `spec.shared_layers` (Dense+ReLU on vectors, 3x3 convs on images). The shared
and task banks all read x, so they run fused as one batched stack of m_s + sum_t m_t experts
(`experts.fused_banks`; per-op overhead dominates at census size), each bank keeping its own
parameters. Tower h_t is the task's head (`task_layers`,
pooling, output Dense; or the user's `heads[t]`). With no task-specific experts CGC is MMoE
(same parameter names, same outputs).

Hyper-parameters (`config.model.kwargs`): `num_shared_experts` (default 4, >= 1) and
`num_task_experts` (default 2, >= 0; an int for every task, or {task: int}).

Parameters: `backbone` and `experts` (the shared experts, stacked `[m_s, ...]`) are shared;
`experts_<task>` (stacked `[m_t, ...]`), `gate_<task>` and `head_<task>` belong to their task.
`encode` -> {task: Z_t}; `gates` -> {"gate_<task>": g_t(x), f32[B, m_s + m_t]}, the shared
experts first.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from mtl_jax.models import experts
from mtl_jax.models.base import ModelSpec
from mtl_jax.tasks import Task

NUM_SHARED_EXPERTS = 4
NUM_TASK_EXPERTS = 2


def extraction_level(model: experts.MixtureModel, shared_in: jnp.ndarray,
                     task_in: Mapping[str, jnp.ndarray], *, num_shared: int,
                     num_task: Mapping[str, int], train: bool, prefix: str = "",
                     shared_gate: bool = False, layers: Sequence[Any] | None = None):
  """Inside `_route`: one extraction network (CGC; a level of PLE).

  Args:
    model: the module whose parameters these are.
    shared_in: the shared experts' input ([B, ...]).
    task_in: {task: its experts' and its gate's input} ([B, ...] each).
    num_shared, num_task: the numbers of shared experts and of each task's experts.
    train: training mode (dropout).
    prefix: the start of every module's name: `<prefix>experts`, `<prefix>experts_<task>`,
      `<prefix>gate_<task>`, `<prefix>shared_gate`.
    shared_gate: also mix every expert of the level (shared first, then the tasks' in task
      order) by a shared gate on `shared_in` (PLE's levels before the last).
    layers: every expert's layer spec (default: `spec.shared_layers`).

  Returns:
    ({task: Z_t}, the shared gate's mixture or None, {gate name: f32[B, E]}).

  When every bank reads the same input (`task_in[t] is shared_in`: CGC, PLE's first level)
  the banks run fused (`experts.fused_banks`), else one `expert_bank` each; the same
  parameters either way.
  """
  layers = model.spec.shared_layers if layers is None else layers
  shared_name = f"{prefix}{experts.EXPERTS}"
  if all(task_in[t.name] is shared_in for t in model.tasks):
    # Every bank reads the same input: one stacked computation over all the level's experts
    # (shared first, then the tasks' in task order), each bank's parameters its own.
    banks = [(shared_name, num_shared)] + [(f"{shared_name}_{t.name}", num_task[t.name])
                                           for t in model.tasks]
    every = experts.fused_banks(model, banks, layers, model.spec.dropout_rate, shared_in,
                                train=train)
    starts = dict(zip([t.name for t in model.tasks],
                      num_shared + np.cumsum([0] + [num_task[t.name] for t in model.tasks])))
    select = lambda weights, t: experts.mix_groups(
        weights, every, [(0, num_shared), (int(starts[t]), num_task[t])])
    select_all = lambda weights: experts.mix(weights, every)
  else:
    shared = model.bank(num_shared, train=train, name=shared_name, layers=layers)(shared_in)
    own = {t.name: model.bank(num_task[t.name], train=train, layers=layers,
                              name=f"{shared_name}_{t.name}")(task_in[t.name])
           for t in model.tasks if num_task[t.name] > 0}
    select = lambda weights, t: experts.mix_banks(weights, [shared] + ([own[t]] if t in own
                                                                       else []))
    select_all = lambda weights: experts.mix_banks(
        weights, [shared] + [own[t.name] for t in model.tasks if t.name in own])
  gates, reps = {}, {}
  for t in model.tasks:
    name = f"{prefix}gate_{t.name}"
    gates[name] = experts.softmax_gate(experts.gate_input(task_in[t.name]),
                                       num_shared + num_task[t.name], name=name)
    reps[t.name] = select(gates[name], t.name)
  mixed = None
  if shared_gate:
    name = f"{prefix}shared_gate"
    total = num_shared + sum(num_task.values())
    gates[name] = experts.softmax_gate(experts.gate_input(shared_in), total, name=name)
    mixed = select_all(gates[name])
  return reps, mixed, gates


class CGC(experts.MixtureModel):
  """CGC (see the module docstring): shared experts, each task's experts, one gate per task."""
  num_shared_experts: int = NUM_SHARED_EXPERTS
  num_task_experts: Any = NUM_TASK_EXPERTS  # {task: int}, filled in by `make`

  def _route(self, h: jnp.ndarray, *, train: bool, part: str):
    reps, _, gates = extraction_level(
        self, h, {t.name: h for t in self.tasks}, num_shared=self.num_shared_experts,
        num_task=task_counts("cgc", self.num_task_experts, self.tasks), train=train)
    return gates if part == "gates" else reps


def task_counts(model: str, value: Any, tasks: Sequence[Task]) -> dict:
  """{task: number of its own experts} from an int for every task or a {task: int}.

  Raises:
    ValueError: naming num_task_experts: a count below 0, or a mapping whose keys are not the
      tasks.
  """
  names = [t.name for t in tasks]
  if isinstance(value, Mapping):
    if sorted(value) != sorted(names):
      raise ValueError(f"model {model!r}: num_task_experts is given for {sorted(value)}, but "
                       f"the tasks are {names}")
    return {t: experts.check_count(model, f"num_task_experts[{t!r}]", value[t], minimum=0)
            for t in names}
  count = experts.check_count(model, "num_task_experts", value, minimum=0)
  return {t: count for t in names}


def make(tasks: Sequence[Task], spec: ModelSpec, *, num_shared_experts: int = NUM_SHARED_EXPERTS,
         num_task_experts: int | Mapping[str, int] = NUM_TASK_EXPERTS) -> CGC:
  """The registry's factory (`config.model.name = "cgc"`).

  Raises:
    ValueError: naming the bad hyper-parameter (num_shared_experts < 1, num_task_experts < 0
      or not per task).
  """
  num_shared = experts.check_count("cgc", "num_shared_experts", num_shared_experts, minimum=1)
  counts = task_counts("cgc", num_task_experts, tasks)
  return CGC(**experts.model_fields(tasks, spec), num_shared_experts=num_shared,
             num_task_experts=counts)
