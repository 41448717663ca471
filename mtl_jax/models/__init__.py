"""Models: the layer-spec parser, backbones, and the hard-parameter-sharing network."""

from mtl_jax.models.backbones import load_backbone, save_backbone
from mtl_jax.models.hps import HardParameterSharing
from mtl_jax.models.specs import SpecStack, TOKENS, global_pool, parse_spec

__all__ = ["HardParameterSharing", "SpecStack", "TOKENS", "global_pool", "load_backbone",
           "parse_spec", "save_backbone"]
