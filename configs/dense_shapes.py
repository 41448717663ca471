"""SegNet-MTAN on generated scenes: segmentation, depth and surface normals on a CPU.

    python -m mtl_jax.main --config=configs/dense_shapes.py --workdir=/tmp/dense_shapes
    python -m mtl_jax.main --config=configs/dense_shapes.py --workdir=/tmp/dense_nash \
        --config.weighting=nash_mtl
    python -m mtl_jax.main --config=configs/dense_shapes.py:runlocal --workdir=/tmp/dense_quick

The scenes of `mtl_jax.data.dense_shapes` (400 training, 100 validation and 100 test scenes at
64x64, drawn in memory; `mj.data.make_dense_shapes` writes the same as NYUv2-layout files for
`configs/nyuv2.py`), the SegNet-MTAN of the NYUv2 protocol (`configs/nyuv2.py`) at an eighth
of its widths, its augmentation (scale-crops by 1, 1.2 or 1.5 and horizontal flips), Adam.
A few minutes on two CPU cores.

The optional argument after ":" is a comma-separated list: `runlocal` shrinks the run to a
quick check (16 scenes of 32x32, widths 4-8, two steps).
"""

from mtl_jax.config import default_config, parse_options


def get_config(arg: str | None = None):
  config = default_config()
  options = parse_options(arg)
  config.dataset.name = "dense_shapes"
  config.model.name = "segnet_mtan"
  config.model.backbone = config.model.shared_layers = config.model.task_layers = ()
  config.model.kwargs = {"filters": (8, 16, 32, 64, 64)}
  config.dense_augment.flip_left_right = True
  config.dense_augment.scales = (1.0, 1.2, 1.5)
  config.optimizer.learning_rate = 1e-3
  config.batch_size = 8
  config.eval_batch_size = 50
  config.num_epochs = 6
  config.steps_per_dispatch = 1   # XLA:CPU convolutions train faster one step per dispatch
  if options.pop("runlocal", None):
    shapes = config.dataset.dense_shapes
    shapes.num_train, shapes.num_val, shapes.num_test, shapes.size = 16, 8, 8, (32, 32)
    config.model.kwargs = {"filters": (4, 8, 8, 8, 8)}
    config.eval_batch_size = 8
    config.num_epochs = 1
  if options:
    raise ValueError(f"unknown option(s) {sorted(options)} for configs/dense_shapes.py")
  steps_per_epoch = config.dataset.dense_shapes.num_train // config.batch_size
  config.log_every = config.eval_every = config.checkpoint_every = steps_per_epoch
  return config
