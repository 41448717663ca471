"""`python -m mtl_jax.main` with the models of contract_models.py registered, for tests that
run a user's model from the command line (as a researcher registers theirs in a launcher):

    python tests/cli_with_test_models.py --config=configs/digits.py \
        --config.model.name=two_column_stitch --config.tasks=digit,parity --workdir=...
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
from absl import app

from mtl_jax import cpu_tuning, main, models

import contract_models


def two_column_stitch(tasks, spec):
  """The two-task cross-stitch network of contract_models, sized from the tasks."""
  models.base.refuse_modules(spec, "two_column_stitch", "backbone", "heads")
  return contract_models.CrossStitch(tuple(t.name for t in tasks),
                                     tuple(t.output_size for t in tasks))


if __name__ == "__main__":
  models.REGISTRY["two_column_stitch"] = two_column_stitch
  cpu_tuning.apply()
  app.run(main.main, flags_parser=main._parse_flags)  # pylint: disable=protected-access
