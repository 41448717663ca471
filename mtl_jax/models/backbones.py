"""Backbones (feature extractors) as `(module, variables)` pairs: built, given, or loaded.

    module, variables = mj.load_backbone("extractor")     # written by mj.save_backbone
    mj.save_backbone("extractor", module, variables)

A backbone is a flax module mapping images f32[B, H, W, C] to features (f32[B, h, w, c] or
f32[B, d]) and its variables ({"params": ..., "batch_stats": ...}). Inside
a model it sits under the name `BACKBONE`, so its variables are the subtree
`BACKBONE` of each collection of the model's variables (`graft`, `split`, `extract`).

A saved backbone is a directory:

| file                | what                                                                  |
| ------------------- | --------------------------------------------------------------------- |
| `backbone.json`     | `{"format": "spec", "spec": [...], "dropout_rate": r}` for a spec-    |
|                     | built `SpecStack`, or `{"format": "pickle"}` for any other module     |
| `module.pkl`        | the module dataclass, pickled (format "pickle" only): its class must  |
|                     | be importable under the same name when loading; unpickling runs code,|
|                     | so load only backbones you trust                                      |
| `variables.msgpack` | the variables, `flax.serialization.msgpack_serialize`d                |
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
from typing import Any, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import atomic, module_pickle
from mtl_jax.errors import ConfigError
from mtl_jax.models.specs import SpecStack, parse_spec

BACKBONE = "backbone"  # the backbone's name inside a model (frozen, saved, probed by it)
_INFO_FILE = "backbone.json"
_MODULE_FILE = "module.pkl"
_VARIABLES_FILE = "variables.msgpack"

Variables = Mapping[str, Any]


# ----------------------------------------------------------------------------------------------
# Saving and loading.


def save_backbone(path: str | os.PathLike, module: nn.Module | tuple[nn.Module, Variables],
                  variables: Variables | None = None) -> None:
  """Writes `module` and `variables` to the directory `path` (created; files overwritten).

  `module` may be the `(module, variables)` pair itself, as `MultiTaskTrainer.fcn` gives it:
  `save_backbone(path, trainer.fcn)`.

  A `SpecStack` is stored as its spec; any other module is pickled (see the module docstring).
  """
  if isinstance(module, tuple):
    if variables is not None or len(module) != 2:
      raise TypeError("save_backbone takes (path, module, variables) or (path, (module, "
                      "variables))")
    module, variables = module
  if variables is None:
    raise TypeError("save_backbone needs the backbone's variables")
  path = os.fspath(path)
  if isinstance(module, SpecStack):
    info = {"format": "spec", "spec": list(parse_spec(module.spec)),
            "dropout_rate": module.dropout_rate}
  else:
    info = {"format": "pickle", "class": f"{type(module).__module__}.{type(module).__qualname__}"}
    module_bytes = module_pickle.dumps(module)
  os.makedirs(path, exist_ok=True)
  if info["format"] == "pickle":
    atomic.write_bytes(os.path.join(path, _MODULE_FILE), module_bytes)
  atomic.write_bytes(os.path.join(path, _VARIABLES_FILE),
               flax.serialization.msgpack_serialize(to_host(variables)))
  atomic.write_bytes(os.path.join(path, _INFO_FILE), json.dumps(info, indent=2).encode())


def load_backbone(path: str | os.PathLike) -> tuple[nn.Module, dict]:
  """The `(module, variables)` pair saved by `save_backbone` in the directory `path`.

  Raises:
    ConfigError: `path` holds no saved backbone, or its module class cannot be imported.
  """
  module = load_module(path)
  with open(os.path.join(os.fspath(path), _VARIABLES_FILE), "rb") as f:
    variables = flax.serialization.msgpack_restore(f.read())
  return module, variables


def load_module(path: str | os.PathLike) -> nn.Module:
  """The module of a backbone saved in `path` (without its variables)."""
  path = os.fspath(path)
  info_path = os.path.join(path, _INFO_FILE)
  if not os.path.isfile(info_path):
    raise ConfigError(f"no saved backbone in {path!r} (no {_INFO_FILE}; write one with "
                      "mj.save_backbone)")
  with open(info_path, encoding="utf-8") as f:
    info = json.load(f)
  if info["format"] == "spec":
    return SpecStack(tuple(info["spec"]), info["dropout_rate"])
  try:
    with open(os.path.join(path, _MODULE_FILE), "rb") as f:
      return pickle.load(f)
  except (AttributeError, ModuleNotFoundError) as e:
    raise ConfigError(f"the backbone in {path!r} is a {info.get('class')}, which cannot be "
                      f"imported here: {e}") from None


def save_module(path: str | os.PathLike, module: nn.Module) -> None:
  """Writes only the module of a backbone (its variables live elsewhere, e.g. a checkpoint)."""
  save_backbone(path, module, {})


# ----------------------------------------------------------------------------------------------
# The forms of `fcn`.


def is_spec(fcn: Any) -> bool:
  """Whether `fcn` is a layer-spec list such as [32, "p", 64] (or "32,p,64")."""
  if isinstance(fcn, str):
    return not os.path.exists(fcn)
  if not isinstance(fcn, (list, tuple)):
    return False
  try:
    parse_spec(fcn)
  except ValueError:
    return False
  return True


def resolve(fcn: Any, dropout_rate: float = 0.0) -> tuple[nn.Module, dict | None]:
  """`(module, variables)` for any form of `fcn`; variables None when it starts fresh.

  Args:
    fcn: a `(flax module, variables)` pair, a layer spec (built as a `SpecStack` and
      initialised fresh), or the path of a backbone written by `save_backbone`.
    dropout_rate: the rate of a spec's "d" layers.

  Raises:
    ConfigError: `fcn` is none of these.
  """
  if isinstance(fcn, (tuple, list)) and len(fcn) == 2 and isinstance(fcn[0], nn.Module):
    return fcn[0], to_host(fcn[1])
  if isinstance(fcn, os.PathLike) or (isinstance(fcn, str) and os.path.exists(fcn)):
    return load_backbone(fcn)
  if is_spec(fcn):
    try:
      return SpecStack(parse_spec(fcn), dropout_rate), None
    except ValueError as e:
      raise ConfigError(f"fcn: {e}") from None
  raise ConfigError(f"fcn must be a (flax module, variables) pair, a layer spec such as "
                    f"[32, 'p', 64] or a saved backbone's directory; got {fcn!r}")


def to_host(variables: Variables) -> dict:
  """Variables as a plain dict of numpy arrays (a copy: later donations cannot delete it)."""
  return jax.tree.map(np.array, flax.core.unfreeze(variables))


# ----------------------------------------------------------------------------------------------
# Checks, at construction.


def call_backbone(module: nn.Module, x: jnp.ndarray, train: bool) -> jnp.ndarray:
  """Calls a backbone with `train=` only if its __call__ takes it."""
  params = inspect.signature(type(module).__call__).parameters
  return module(x, train=train) if "train" in params else module(x)


def _inference(module: nn.Module, x: jnp.ndarray) -> jnp.ndarray:
  return call_backbone(module, x, train=False)


def feature_shape(module: nn.Module, variables: Variables | None,
                  input_shape: Sequence[int]) -> tuple[int, ...]:
  """The backbone's output shape for one input of `input_shape` ([H, W, C]), by `eval_shape`.

  `variables` (if given) must have the structure and shapes the module creates for that input.

  Raises:
    ConfigError: a one-line message naming `imshape`/`num_channels` when the module cannot take
      the input, its output is empty (a pool stack that shrinks the image below 1x1), or
      `variables` do not fit it.
  """
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  described = f"imshape/num_channels {tuple(input_shape)}"
  try:
    created = jax.eval_shape(
        lambda y: module.init(jax.random.PRNGKey(0), y, method=_inference), x)
    if variables is not None:
      _check_fits(created, variables, described)
    out = jax.eval_shape(lambda v, y: module.apply(v, y, method=_inference),
                         created if variables is None else variables, x)
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (any failure of the user's module)
    raise ConfigError(f"the backbone cannot take {described}: "
                      f"{type(e).__name__}: {_first_line(e)}") from None
  if not hasattr(out, "shape") or out.ndim not in (2, 4) or 0 in out.shape:
    got = getattr(out, "shape", type(out).__name__)
    raise ConfigError(f"the backbone turns {described} into features of shape {got}; it "
                      "needs a larger imshape or fewer 'p' layers")
  return tuple(out.shape[1:])


def _check_fits(expected: Variables, given: Variables, described: str) -> None:
  """ConfigError naming the first variable whose presence or shape differs."""
  flat_expected = flax.traverse_util.flatten_dict(flax.core.unfreeze(expected), sep="/")
  flat_given = flax.traverse_util.flatten_dict(flax.core.unfreeze(given), sep="/")
  for name in sorted(set(flat_expected) | set(flat_given)):
    if name not in flat_given:
      raise ConfigError(f"the backbone's variables lack {name!r}, which its module creates "
                        f"for {described}")
    if name not in flat_expected:
      raise ConfigError(f"the backbone's variables hold {name!r}, which its module does not "
                        f"create for {described}")
    want, have = tuple(flat_expected[name].shape), tuple(np.shape(flat_given[name]))
    if want != have:
      raise ConfigError(f"the backbone's variable {name!r} has shape {have}, but its module "
                        f"makes {want} for {described}")


def _first_line(error: Exception) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else ""


# ----------------------------------------------------------------------------------------------
# The backbone's variables inside the model's.


def graft(model_variables: Variables, backbone_variables: Variables) -> dict:
  """The model's variables with the backbone's subtree replaced by `backbone_variables`."""
  out = dict(model_variables)
  for collection, tree in backbone_variables.items():
    out[collection] = {**out.get(collection, {}), BACKBONE: tree}
  return out


def split(model_variables: Variables) -> tuple[dict, dict]:
  """(the model's variables without the backbone, the backbone's variables).

  Collections that only the backbone has are dropped from the first; "params" always stays.
  """
  rest, backbone = {}, {}
  for collection, tree in model_variables.items():
    if BACKBONE in tree:
      backbone[collection] = tree[BACKBONE]
    others = {k: v for k, v in tree.items() if k != BACKBONE}
    if others or collection == "params":
      rest[collection] = others
  return rest, backbone


def extract(model_variables: Variables) -> dict:
  """The backbone's variables within the model's."""
  return split(model_variables)[1]
