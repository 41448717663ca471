"""The parts every registered architecture builds from a `ModelSpec`: the backbone and the heads.

An architecture keeps the spec's layer settings in a `spec` field (`layer_spec(spec)`: the spec
without its modules) and the user's modules in fields named `backbone` and `heads`, so flax
names them `backbone` and `heads_<task>` (flax cannot see modules inside a dataclass). Its own
structure (experts, columns, attention, a branching tree) sits between the two parts, inside
its compact methods:

    x = apply_backbone(self.spec, self.backbone, x, train=train)     # shared; identity if none
    ...                                                             # {task: Z_t}
    out = {t.name: apply_head(self.spec, self.heads, t, z[t.name], train=train) for t in tasks}

Parameters under `BACKBONE` are shared (the name pretrained and frozen backbones are grafted
under); a head's, `head_<task>` or `heads_<task>`, belong to its task.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.backbones import BACKBONE, call_backbone
from mtl_jax.models.base import ModelSpec
from mtl_jax.models.specs import SpecStack, global_pool
from mtl_jax.tasks import Task

__all__ = ["BACKBONE", "TaskHead", "apply_backbone", "apply_head", "check_heads", "layer_spec",
           "module_fields"]


def layer_spec(spec: ModelSpec) -> ModelSpec:
  """`spec` without its modules (`backbone`, `heads`), as a model's `spec` field keeps it."""
  return dataclasses.replace(spec, backbone=None, heads=None,
                             backbone_spec=tuple(spec.backbone_spec),
                             shared_layers=tuple(spec.shared_layers),
                             task_layers=tuple(spec.task_layers))


def module_fields(tasks: Sequence[Task], spec: ModelSpec) -> dict:
  """{"spec", "backbone", "heads"}: a factory's keyword arguments for the parts (heads checked
  and put in task order)."""
  heads = spec.heads
  if heads is not None:
    check_heads(heads, tasks)
    heads = {t.name: heads[t.name] for t in tasks}
  return {"spec": layer_spec(spec), "backbone": spec.backbone, "heads": heads}


def check_heads(heads: Mapping[str, nn.Module], tasks: Sequence[Task]) -> None:
  """ValueError unless `heads` has exactly one module per task."""
  names = [t.name for t in tasks]
  if sorted(heads) != sorted(names):
    raise ValueError(f"heads are given for {sorted(heads)}, but the tasks are {names}")


def apply_backbone(spec: ModelSpec, module: nn.Module | None, x: jnp.ndarray, *,
                   train: bool) -> jnp.ndarray:
  """Inside a compact method: the user's backbone `module` (the model's field `backbone`) or
  `spec.backbone_spec`'s layers under `BACKBONE` (identity when empty). Frozen
  (`spec.freeze_backbone`): inference mode and no gradient past its output."""
  train = train and not spec.freeze_backbone
  if module is not None:
    x = call_backbone(module, x, train)
  else:
    x = SpecStack(tuple(spec.backbone_spec), spec.dropout_rate, name=BACKBONE)(x, train=train)
  return jax.lax.stop_gradient(x) if spec.freeze_backbone else x


class TaskHead(nn.Module):
  """One task's spec-built head: `task_layers`, pooling over space (`global_pooling`), and a
  Dense of `task.output_size`."""
  task: Task
  spec: ModelSpec

  @nn.compact
  def __call__(self, z: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    spec = self.spec
    h = SpecStack(tuple(spec.task_layers), spec.dropout_rate, name="layers")(z, train=train)
    return nn.Dense(self.task.output_size, name="out")(global_pool(h, spec.global_pooling))


def apply_head(spec: ModelSpec, heads: Mapping[str, nn.Module] | None, task: Task,
               z: jnp.ndarray, *, train: bool) -> jnp.ndarray:
  """Inside a compact method: task's output from its representation `z`, by the user's head
  (the model's field `heads`, named `heads_<task>`) or a `TaskHead` named `head_<task>`."""
  if heads is not None:
    return call_backbone(heads[task.name], z, train)
  return TaskHead(task, spec, name=f"head_{task.name}")(z, train=train)
