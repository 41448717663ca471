"""Multi-task models, found by name: `get("hps", tasks, spec)`; the contract is in base.py.

To add an architecture: write `mtl_jax/models/<name>.py` with a module meeting the contract
(`mtl_jax.models.base`) and a `make(tasks, spec: ModelSpec, **hyperparameters)` factory, then
add one line to REGISTRY. `config.model.name` selects it and `config.model.kwargs` holds its
hyper-parameters; `spec` carries the layer specs and modules every architecture may build on.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn

from mtl_jax.models import (base, cgc, cross_stitch, dselect_k, hps, ltb, mmoe, mtan,
                            multi_lenet, parts, ple, segnet, segnet_mtan)
from mtl_jax.models.base import ModelSpec
from mtl_jax.models.backbones import load_backbone, save_backbone
from mtl_jax.models.hps import HardParameterSharing
from mtl_jax.models.specs import SpecStack, TOKENS, global_pool, parse_spec
from mtl_jax.tasks import Task


REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "hps": hps.make,
    "mmoe": mmoe.make,
    "cgc": cgc.make,
    "ple": ple.make,
    "dselect_k": dselect_k.make,
    "cross_stitch": cross_stitch.make,
    "mtan": mtan.make,
    "ltb": ltb.make,
    "multi_lenet": multi_lenet.make,
    "segnet": segnet.make,
    "segnet_mtan": segnet_mtan.make,
}

# Networks fixed by their paper for one input (MultiLeNet: 28x28 images; the SegNets: images
# of sides divisible by 32 and per-pixel tasks); they refuse layer
# specs, so sweeps over "every architecture" on other data leave them out.
FIXED_NETWORKS = ("multi_lenet", "segnet", "segnet_mtan")


def spec_built() -> list[str]:
  """The registered architectures that build on layer specs, i.e. all but FIXED_NETWORKS."""
  return sorted(set(REGISTRY) - set(FIXED_NETWORKS))


def get(name: str, tasks: Sequence[Task], spec: ModelSpec | None = None,
        **hyperparameters) -> nn.Module:
  """The model registered as `name` for `tasks`.

  Raises:
    ValueError: an unknown name or a bad hyper-parameter, naming it.
  """
  if name not in REGISTRY:
    raise ValueError(f"unknown model {name!r}; known: {sorted(REGISTRY)}")
  try:
    return REGISTRY[name](tuple(tasks), spec or ModelSpec(), **hyperparameters)
  except TypeError as e:
    raise ValueError(f"model {name!r}: {e}") from None


__all__ = ["FIXED_NETWORKS", "HardParameterSharing", "ModelSpec", "REGISTRY", "SpecStack", "TOKENS", "base", "get",
           "global_pool", "load_backbone", "parse_spec", "save_backbone", "spec_built"]
