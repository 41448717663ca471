"""Multi-gate Mixture-of-Experts, MMoE (Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018).

n experts f_1..f_n are shared by all tasks; each task t has its own softmax gate over them
(the paper's section 4.2, equations 5-6):

    g_t(x) = softmax(W_t x + b_t) in R^n,      Z_t = sum_e g_t(x)_e f_e(x),      y_t = h_t(Z_t)

Here x is the experts' input: the backbone's output (`spec.backbone_spec` or a user's
`backbone`; the raw input without one), flattened per example for the gates. Each expert is a
`SpecStack` of `spec.shared_layers` (Dense+ReLU on vectors, 3x3 convs on images, where Z_t is
a mixture of feature maps); the n experts run batched (`experts.expert_bank`). Tower h_t is
the task's head (`task_layers`, pooling, output Dense; or the user's `heads[t]`).

With one expert, the gate is constant 1 and MMoE is hard parameter sharing (`hps` with
`shared_layers` = the expert's spec).

Hyper-parameters (`config.model.kwargs`): `num_experts` (default 8).

Parameters: `backbone` and `experts` (stacked `[n, ...]`) are shared; `gate_<task>` (a Dense
of n logits) and `head_<task>` belong to their task. `encode` -> {task: Z_t}; `gates` ->
{"gate_<task>": g_t(x), f32[B, n]}.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from mtl_jax.models import experts
from mtl_jax.models.base import ModelSpec
from mtl_jax.tasks import Task

NUM_EXPERTS = 8


class MMoE(experts.MixtureModel):
  """MMoE (see the module docstring); `num_experts` shared experts, one softmax gate per
  task."""
  num_experts: int = NUM_EXPERTS

  def _route(self, h: jnp.ndarray, *, train: bool, part: str):
    g_in = experts.gate_input(h)
    gates = {f"gate_{t.name}": experts.softmax_gate(g_in, self.num_experts, name=f"gate_{t.name}")
             for t in self.tasks}
    if part == "gates":
      return gates
    f = self.bank(self.num_experts, train=train, name=experts.EXPERTS)(h)
    return {t.name: experts.mix(gates[f"gate_{t.name}"], f) for t in self.tasks}


def make(tasks: Sequence[Task], spec: ModelSpec, *, num_experts: int = NUM_EXPERTS) -> MMoE:
  """The registry's factory (`config.model.name = "mmoe"`).

  Raises:
    ValueError: num_experts is not an integer >= 1.
  """
  num_experts = experts.check_count("mmoe", "num_experts", num_experts, minimum=1)
  return MMoE(**experts.model_fields(tasks, spec), num_experts=num_experts)
