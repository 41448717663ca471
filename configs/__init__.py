"""Config files, one per experiment setup; installed as `mtl_jax.configs` (`--config=digits`)."""
