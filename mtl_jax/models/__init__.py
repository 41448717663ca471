"""Models: the layer-spec parser and the hard-parameter-sharing network."""

from mtl_jax.models.hps import HardParameterSharing
from mtl_jax.models.specs import SpecStack, TOKENS, global_pool, parse_spec

__all__ = ["HardParameterSharing", "SpecStack", "TOKENS", "global_pool", "parse_spec"]
