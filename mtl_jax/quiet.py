"""Our output only: the settings an entry point makes so that a run prints mtl_jax's lines.

TensorFlow (imported by TFDS to read data, and doing no computation here) prints two C++ log
lines on import (absl's pre-initialisation warning and the oneDNN notice, which
`TF_CPP_MIN_LOG_LEVEL` does not reach); absl and orbax log INFO lines. `apply()` is called by
`python -m mtl_jax.main` and the experiment scripts, never on `import mtl_jax`.
"""

from __future__ import annotations

import logging
import os

from absl import logging as absl_logging


def apply() -> None:
  """Silences TensorFlow's C++ logs and Python INFO logs (absl, orbax); warnings remain.

  Environment variables already set are kept; call before TensorFlow is imported.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # oneDNN's notice is the line TensorFlow prints at import: TF only reads data here.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("orbax").setLevel(logging.WARNING)
