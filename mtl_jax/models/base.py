"""The multi-task model contract, and the functions the training core reads a model through.

A multi-task model is any `flax.linen` module with

    __call__(inputs, *, train: bool = False) -> {task name: output}

that declares which of its parameters are *shared*. Gradient methods build the per-task
Jacobian over the shared parameters; every other parameter belongs to exactly one task and gets
that task's gradient only, unweighted. A model declares ownership in one of two ways:

- `shared_modules: tuple[str, ...]`: the top-level parameter names (submodule names) that are
  shared. Every other top-level name belongs to the task it names: the task itself
  (`"digit"`) or a name ending in `_<task>` (`"head_digit"`, `"tower_digit"`; the longest
  matching task wins);
- or a method `owner(path: tuple[str, ...]) -> str | None` giving the task of the parameter at
  `path` in `params` (None: shared), for anything else.

A model with an encoder/decoder split exposes it, and then the fast paths apply (one trunk VJP
reused over the T task cotangents, the dense-layer Gram matrix without J, the representation
mode of MGDA-UB, the linear probe):

    encode(inputs, *, train) -> Z            one representation read by every head, or
                                 {task: Z_t}    one per task (MMoE's gated mixtures)
    decode(reps, *, train) -> {task: output}  reps = {task: Z_t}; head t reads only reps[t]

`encode` may read only shared parameters and `decode` only task parameters. A model without
the split (cross-stitch networks) trains with every method through the generic path: the VJP
of the whole model mapped over the T one-hot cotangents of the loss vector, restricted to the
shared parameters (T backward passes of the whole model).

Optionally `regularizer(inputs, *, train) -> f32[]`: a penalty the optimizer minimises beside
the weighted task losses, outside the weighting (DSelect-k's entropy term on its gates). Its
gradient is added to every parameter's gradient, unweighted, by one more backward pass over
what it reads.

Optionally `features(inputs) -> f32[B, D]`, the representation a linear probe reads. By
default it is `encode`'s output pooled over space (the model's `global_pooling`, else the
average) and concatenated over tasks when there is one per task.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.specs import global_pool

Params = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What every registered architecture may build on: layer specs (`mtl_jax.models.specs`),
  from `config.model`, and a user's modules. A factory that cannot use a given `backbone` or
  `heads` refuses them (`refuse_modules`)."""
  backbone_spec: Sequence[Any] = ()
  shared_layers: Sequence[Any] = ()
  task_layers: Sequence[Any] = ()
  dropout_rate: float = 0.0
  global_pooling: str = "max"
  backbone: nn.Module | None = None
  freeze_backbone: bool = False
  heads: Mapping[str, nn.Module] | None = None


def refuse_modules(spec: ModelSpec, model: str, *names: str) -> None:
  """ValueError if `spec` carries a user module (`backbone`, `heads`) that `model` cannot use."""
  for name in names:
    if getattr(spec, name) is not None:
      raise ValueError(f"model {model!r} builds its own {name}; pass {name}= with model 'hps' "
                       "or a whole model as model=")


def has_split(model: nn.Module) -> bool:
  """Whether the model exposes the encoder/decoder split (`encode` and `decode`)."""
  return callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))


def has_regularizer(model: nn.Module) -> bool:
  """Whether the model adds a penalty of its own to the objective (`regularizer`)."""
  return callable(getattr(model, "regularizer", None))


def owner_of(model: nn.Module, path: Sequence[str], task_names: Sequence[str]) -> str | None:
  """The task owning the parameter at `path` (None: shared), by the model's declaration.

  Raises:
    ValueError: the model declares neither `owner` nor `shared_modules`, or a parameter is
      neither shared nor named after a task.
  """
  path = tuple(path)
  if callable(getattr(model, "owner", None)):
    found = model.owner(path)
  elif hasattr(model, "shared_modules"):
    found = None if path[0] in tuple(model.shared_modules) else _named_task(path[0], task_names)
    if found is None and path[0] not in tuple(model.shared_modules):
      raise ValueError(f"model {type(model).__name__}: parameter {'/'.join(path)!r} is neither "
                       f"in shared_modules {tuple(model.shared_modules)} nor named after a task "
                       f"of {tuple(task_names)}")
  else:
    raise ValueError(f"model {type(model).__name__} declares neither `shared_modules` nor "
                     "`owner(path)`: say which parameters are shared (mtl_jax.models.base)")
  if found is not None and found not in task_names:
    raise ValueError(f"model {type(model).__name__}: owner of {'/'.join(path)!r} is "
                     f"{found!r}, not one of the tasks {tuple(task_names)}")
  return found


def owner_by_names(names: Sequence[str], shared: Sequence[str],
               prefixes: Sequence[str]) -> Callable[[tuple], str | None]:
  """An `owner(path)` for models whose shared names repeat per stage (`stitch_0`, `stitch_1`):
  None for a top-level name in `shared` or starting with one of them plus "_", else the task
  that `<prefix><task>` names (ValueError for any other name)."""
  def owner(path: tuple) -> str | None:
    top = path[0]
    if any(top == s or top.startswith(s + "_") for s in shared):
      return None
    for prefix in prefixes:
      if top.startswith(prefix) and top[len(prefix):] in names:
        return top[len(prefix):]
    raise ValueError(f"parameter {'/'.join(path)!r} is neither shared ({tuple(shared)}) nor "
                     f"a task's ({tuple(p + '<task>' for p in prefixes)}, tasks {tuple(names)})")
  return owner


def _named_task(name: str, task_names: Sequence[str]) -> str | None:
  matches = [t for t in task_names if name == t or name.endswith("_" + t)]
  return max(matches, key=len) if matches else None


def param_owners(model: nn.Module, params: Params, task_names: Sequence[str]) -> dict:
  """{path tuple: task name | None} for every parameter leaf of `params`."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return {path: owner_of(model, path, task_names) for path in flat}


def split_params(params: Params, owners: Mapping[tuple, str | None]) -> tuple[dict, dict]:
  """(the shared parameters, the task parameters), each a nested dict like `params`."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  shared = {p: v for p, v in flat.items() if owners[p] is None}
  tasks = {p: v for p, v in flat.items() if owners[p] is not None}
  return (flax.traverse_util.unflatten_dict(shared), flax.traverse_util.unflatten_dict(tasks))


def merge_params(*parts: Params) -> dict:
  """The union of disjoint nested parameter dicts (the inverse of `split_params`)."""
  flat = {}
  for part in parts:
    flat.update(flax.traverse_util.flatten_dict(flax.core.unfreeze(part)))
  return flax.traverse_util.unflatten_dict(flat)


def per_task_reps(rep: Any, task_names: Sequence[str]) -> dict:
  """{task: Z_t}: `encode`'s output as `decode` takes it (one shared Z is read by every head)."""
  if isinstance(rep, Mapping):
    missing = [t for t in task_names if t not in rep]
    if missing:
      raise ValueError(f"encode returned representations for {sorted(rep)}, not for the "
                       f"tasks {missing}")
    return {t: rep[t] for t in task_names}
  return {t: rep for t in task_names}


def pooled(rep: Any, pooling: str = "average") -> jnp.ndarray:
  """f32[B, D]: a representation (array or {task: array}) pooled over space and flattened."""
  if isinstance(rep, Mapping):
    return jnp.concatenate([pooled(rep[t], pooling) for t in sorted(rep)], axis=-1)
  rep = global_pool(rep, pooling)
  return rep.reshape(rep.shape[0], -1)


def features(model: nn.Module, variables: Params, inputs: jnp.ndarray) -> jnp.ndarray:
  """f32[B, D]: the model's `features`, or its pooled `encode` output (see the docstring).

  Raises:
    ValueError: the model has neither `features` nor an `encode`.
  """
  if callable(getattr(model, "features", None)):
    return model.apply(variables, inputs, method="features")
  if not callable(getattr(model, "encode", None)):
    raise ValueError(f"model {type(model).__name__} has no representation to probe: give it "
                     "an `encode` or a `features` method (mtl_jax.models.base)")
  rep = model.apply(variables, inputs, train=False, method="encode")
  return pooled(rep, getattr(model, "global_pooling", "average"))


def check_model(model: nn.Module, variables: Params, inputs: jax.ShapeDtypeStruct,
                task_names: Sequence[str]) -> None:
  """Checks the contract abstractly (`jax.eval_shape`): outputs for exactly the tasks, one
  row per input, every parameter shared or owned by a task, `encode`/`decode` agreeing with
  `__call__`.

  Raises:
    ValueError: naming the first breach.
  """
  name = type(model).__name__
  outputs = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, inputs)
  if not isinstance(outputs, Mapping) or set(outputs) != set(task_names):
    got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
    raise ValueError(f"model {name} must return {{task: output}} for the tasks "
                     f"{sorted(task_names)}; it returns {got}")
  for task, out in outputs.items():
    if out.shape[:1] != inputs.shape[:1]:
      raise ValueError(f"model {name}: output {task!r} has shape {out.shape}, not one row per "
                       f"input ({inputs.shape[0]})")
  param_owners(model, variables.get("params", {}), task_names)
  if has_split(model):
    def split_call(v, x):
      rep = model.apply(v, x, train=False, method="encode")
      return model.apply(v, per_task_reps(rep, task_names), train=False, method="decode")
    decoded = jax.eval_shape(split_call, variables, inputs)
    if jax.tree.map(lambda a: a.shape, decoded) != jax.tree.map(lambda a: a.shape, outputs):
      raise ValueError(f"model {name}: decode(encode(x)) has other shapes than model(x)")
