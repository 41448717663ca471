"""The image MultiTaskTrainer on generated shapes, or on your own CSVs of image files.

    python -m mtl_jax.main --config=configs/shapes.py --workdir=/tmp/shapes_cli
    python -m mtl_jax.main --config=configs/shapes.py:generate=500,runlocal --workdir=/tmp/s
    python -m mtl_jax.main --config=configs/shapes.py --workdir=/tmp/mine \
        --config.images.train_csv=train.csv --config.images.val_csv=val.csv

Without CSVs, `mtl_jax.data.make_shapes` first draws the images into <workdir>/shapes (tasks
shape, color, size and the regression task x; 30% of each task's labels missing). A CSV has a
`filepath` column and one column per task (`config.tasks` picks some; default all).

The optional argument after ":" is a comma-separated list: `generate=N` draws N images
(default 2000), `runlocal` shrinks the run to a quick check (16x16 images, a tiny network, one
epoch). Logging, evaluation and checkpoints happen once per epoch of the generated data; with
your own CSVs set `--config.eval_every` etc. (in steps) to suit.
"""

from mtl_jax.config import default_config, parse_options

VAL_FRACTION = 0.2  # make_shapes' val split


def get_config(arg: str | None = None):
  config = default_config()
  options = parse_options(arg)
  num_images = int(options.pop("generate", 2000))
  config.dataset.name = "images"
  config.images.generate_shapes = num_images
  config.images.task_types = {"x": "regression"}
  config.images.imshape = (64, 64)
  config.model.backbone = (16, "p", 32, "p", 64, "p")
  config.model.shared_layers = (64,)
  config.model.task_layers = ()
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = "constant"
  config.batch_size = config.eval_batch_size = 32
  config.num_epochs = 8
  if options.pop("runlocal", None):
    config.images.imshape = (16, 16)
    config.model.backbone = (8, "p")
    config.model.shared_layers = (8,)
    config.batch_size = config.eval_batch_size = 16
    config.num_epochs = 1
  if options:
    raise ValueError(f"unknown option(s) {sorted(options)} for configs/shapes.py")
  num_train = num_images - round(num_images * VAL_FRACTION)
  steps_per_epoch = max(1, num_train // config.batch_size)
  config.log_every = config.eval_every = config.checkpoint_every = steps_per_epoch
  return config
