"""Pickling flax modules whose fields hold `jax.nn.initializers` closures.

`nn.Dense(10)` keeps `kernel_init = lecun_normal()`, a function local to
`jax.nn.initializers.variance_scaling`, which `pickle` cannot store by name; so a user's
`heads={"digit": nn.Dense(10)}` could not be saved for `mj.load`. `dumps` stores such a closure
as its factory's name and arguments (read from the closure's cells) and `pickle.loads` calls the
factory again: the same initializer, not a stand-in. Likewise the public functions of jax and
flax that are wrapped objects under another module's name (`nn.relu`, `jax.nn.gelu`) are stored
by their public name. Any other object pickles as `pickle` does.
"""

from __future__ import annotations

import importlib
import inspect
import io
import pickle
import types
from typing import Any

import jax

# Where the factories' closures say they live (the factories themselves claim the public name).
_INITIALIZERS_MODULE = jax.nn.initializers.constant(0.0).__module__


def initializer_arguments(fn: Any) -> tuple[str, dict] | None:
  """(factory name, its keyword arguments) that rebuild `fn` when `fn` is a closure made by a
  `jax.nn.initializers` factory (`variance_scaling(...)`'s `init`); None for anything else."""
  if not isinstance(fn, types.FunctionType) or fn.__module__ != _INITIALIZERS_MODULE:
    return None
  factory_name, _, local_name = fn.__qualname__.partition(".<locals>.")
  factory = getattr(jax.nn.initializers, factory_name, None)
  if factory is None or not local_name or "." in local_name:
    return None
  cells = fn.__closure__ or ()
  arguments = {name: cell.cell_contents for name, cell in zip(fn.__code__.co_freevars, cells)}
  if not set(arguments) <= set(inspect.signature(factory).parameters):
    return None  # the closure holds more than the factory's arguments: not rebuildable
  return factory_name, arguments


def rebuild_initializer(factory_name: str, arguments: dict):
  """The initializer `jax.nn.initializers.<factory_name>(**arguments)` (what `loads` calls)."""
  return getattr(jax.nn.initializers, factory_name)(**arguments)


# Public namespaces whose functions are stored by name ("jax.nn", "relu").
PUBLIC_MODULES = ("jax.nn", "flax.linen", "jax.numpy")


def public_name(obj: Any) -> tuple[str, str] | None:
  """(module, name) of a public function of `PUBLIC_MODULES` that is `obj`, else None."""
  name = getattr(obj, "__name__", None)
  if not isinstance(name, str) or not callable(obj):
    return None
  for module in PUBLIC_MODULES:
    if getattr(importlib.import_module(module), name, None) is obj:
      return module, name
  return None


def public_function(module: str, name: str):
  """`module.name` (what `loads` calls for a function stored by `public_name`)."""
  return getattr(importlib.import_module(module), name)


class _Pickler(pickle.Pickler):

  def reducer_override(self, obj):
    if isinstance(obj, type):
      return NotImplemented
    rebuilt = initializer_arguments(obj)
    if rebuilt is not None:
      return rebuild_initializer, rebuilt
    public = public_name(obj)
    if public is not None:
      return public_function, public
    return NotImplemented


def dumps(obj: Any) -> bytes:
  """`pickle.dumps(obj)`, with `jax.nn.initializers` closures stored as their factory calls and
  public jax/flax functions by name."""
  buffer = io.BytesIO()
  _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
  return buffer.getvalue()
