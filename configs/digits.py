"""The default job: three tasks on scikit-learn's handwritten digits.

    python -m mtl_jax.main --config=configs/digits.py --workdir=/tmp/digits
    python -m mtl_jax.main --config=configs/digits.py:missing=0.4 --workdir=/tmp/digits40

The optional argument after ":" is a comma-separated list: `missing=F` blanks a fraction F of
each task's training labels, `runlocal` shrinks the run to a quick check.
"""

from mtl_jax.config import default_config, parse_options


def get_config(arg: str | None = None):
  config = default_config()
  options = parse_options(arg)
  config.dataset.name = "digits"
  config.dataset.missing_fraction = float(options.pop("missing", 0.0))
  config.optimizer.schedule = "cosine"
  if options.pop("runlocal", None):
    config.num_steps = 200
    config.log_every = config.eval_every = config.checkpoint_every = 100
  if options:
    raise ValueError(f"unknown option(s) {sorted(options)} for configs/digits.py")
  return config
