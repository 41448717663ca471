"""Task-weighting methods, found by name: `get("equal")`, `get("manual", weights=(1, .5))`.

To add a method: write `mtl_jax/weighting/<name>.py` with a `make(**hyperparameters)` that
returns a `Weighting` (see base.py), and add one line to REGISTRY.

Every gradient method (needs "gram" or "grads") also runs on the gradients of log L_i with
`get(name, log_losses=True)` (`log_losses.py`, DB-MTL's log-MGDA, log-CAGrad, ...).

A `make` may also declare run facts among its parameters; `get` fills them from `context`
unless given explicitly: `optimizer` (the run's optax transformation, for methods with
learnable parameters), `learning_rate` (its schedule, step -> rate), `steps_per_epoch` and
`num_steps`.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from mtl_jax.weighting import equal, manual
from mtl_jax.weighting import auto_lambda
from mtl_jax.weighting import dtp, dwa, rlw, uncertainty, uw_so
from mtl_jax.weighting import famo, gls, go4align, si, stch
from mtl_jax.weighting import cagrad, graddrop, gradvac, imtl, krum, mgda, pcgrad
from mtl_jax.weighting import db_mtl, excess_mtl, gradnorm, moco, modo, sdmgrad
from mtl_jax.weighting import aligned_mtl, con_fig, dualproj, fairgrad, nash_mtl, upgrad
from mtl_jax.weighting import ntkmtl, ntkmtl_sr, trimmed_mean
from mtl_jax.weighting import log_losses as log_losses_lib
from mtl_jax.weighting.base import (Direction, Lookahead, Weighting, WeightingInputs, combine,
                                   gram_matrix, make_inputs)

REGISTRY = {
    "equal": equal.make,
    "manual": manual.make,
    "uncertainty": uncertainty.make,
    "adaptive": uncertainty.make,
    "dtp": dtp.make,
    "dwa": dwa.make,
    "rlw": rlw.make,
    "gls": gls.make,
    "si": si.make,
    "uw_so": uw_so.make,
    "auto_lambda": auto_lambda.make,
    "famo": famo.make,
    "go4align": go4align.make,
    "stch": stch.make,
    "gradnorm": gradnorm.make,
    "moco": moco.make,
    "db_mtl": db_mtl.make,
    "modo": modo.make,
    "sdmgrad": sdmgrad.make,
    "excess_mtl": excess_mtl.make,
    "mgda": mgda.make,
    "pcgrad": pcgrad.make,
    "gradvac": gradvac.make,
    "cagrad": cagrad.make,
    "imtl": imtl.make,
    "graddrop": graddrop.make,
    "nash_mtl": nash_mtl.make,
    "upgrad": upgrad.make,
    "krum": krum.make,
    "trimmed_mean": trimmed_mean.make,
    "ntkmtl": ntkmtl.make,
    "ntkmtl_sr": ntkmtl_sr.make,
    "dualproj": dualproj.make,
    "aligned_mtl": aligned_mtl.make,
    "con_fig": con_fig.make,
    "fairgrad": fairgrad.make,
}

CONTEXT_KEYS = ("optimizer", "learning_rate", "steps_per_epoch", "num_steps")


def get(name: str, *, context: Mapping[str, Any] | None = None, log_losses: bool = False,
        **hyperparameters) -> Weighting:
  """The method registered as `name`, built with `hyperparameters` and the run's `context`;
  with `log_losses`, run on the gradients of log L_i (`log_losses.on_log_losses`), unless the
  method defines its own log space (a `log_losses` parameter, as STCH's official code).

  Raises ValueError naming the problem: an unknown name or a bad hyper-parameter.
  """
  if name not in REGISTRY:
    raise ValueError(f"unknown weighting {name!r}; known: {sorted(REGISTRY)}")
  if not isinstance(log_losses, bool):
    raise ValueError(f"weighting {name!r}: log_losses must be True or False, got {log_losses!r}")
  make = REGISTRY[name]
  accepted = inspect.signature(make).parameters
  own_log_space = "log_losses" in accepted
  if own_log_space:
    hyperparameters = {**hyperparameters, "log_losses": log_losses}
  if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
    unknown = sorted(set(hyperparameters) - set(accepted) - set(CONTEXT_KEYS))
    if unknown:
      valid = [k for k in accepted if k not in CONTEXT_KEYS]
      raise ValueError(f"weighting {name!r} has no hyper-parameter {', '.join(map(repr, unknown))}"
                       f"; its hyper-parameters: {', '.join(valid) if valid else 'none'}")
  kwargs = {k: v for k, v in (context or {}).items()
            if k in accepted and k not in hyperparameters}
  try:
    method = make(**hyperparameters, **kwargs)
  except TypeError as e:
    raise ValueError(f"weighting {name!r}: {e}") from None
  if not log_losses or own_log_space:
    return method
  try:
    return log_losses_lib.on_log_losses(method)
  except ValueError as e:
    raise ValueError(f"weighting {name!r}: {e}") from None


__all__ = ["CONTEXT_KEYS", "Direction", "Lookahead", "REGISTRY", "Weighting", "WeightingInputs",
           "combine", "get", "gram_matrix", "make_inputs"]
