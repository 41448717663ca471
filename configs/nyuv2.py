"""The NYUv2 protocol of Nash-MTL and FAMO: SegNet-MTAN on 13-class segmentation, depth and
surface normals.

    python -m mtl_jax.main --config=configs/nyuv2.py:path=/data/nyuv2 --workdir=/tmp/nyu_equal
    python -m mtl_jax.main --config=configs/nyuv2.py:path=/data/nyuv2 --workdir=/tmp/nyu_nash \
        --config.weighting=nash_mtl
    python experiments/nyuv2_report.py --runs=equal=/tmp/nyu_equal,nash_mtl=/tmp/nyu_nash

`path` holds the preprocessed NYUv2 of the MTAN code (`<path>/{train,val}/{image,label,depth,
normal}/<i>.npy`, 795 training and 654 test scenes at 288x384; see `mtl_jax/data/nyuv2.py`).
As in Nash-MTL's experiments/nyuv2/trainer.py (and FAMO's copy of it): the SegNet-MTAN of
`mtl_jax.models.segnet_mtan` at the paper's widths, batch 2, Adam with learning rate 1e-4
halved after epoch 100 (StepLR(100, 0.5)), 200 epochs, their augmentation (random scale-crops
by 1, 1.2 or 1.5 and horizontal flips), and the test set evaluated after every epoch (as
"val": the protocol has no validation split); the reported score is the mean of the last 10
epochs' test metrics, which `experiments/nyuv2_report.py` reads from the runs with Δm% against
the single-task baseline.

Options after ":", comma-separated: `path=DIR` (required); `train_size=N`, the number of
training scenes (795; the learning-rate step and the evaluations are placed in epochs of it);
`runlocal`, a quick check on small data (e.g. `mj.data.make_dense_shapes(DIR, 16,
size=(32, 32))`): narrow widths, two epochs, one step per dispatch.
"""

from mtl_jax.config import default_config, parse_options

NYUV2_TRAIN = 795
EPOCHS = 200
DECAY_EPOCH = 100


def get_config(arg: str | None = None):
  config = default_config()
  options = parse_options(arg)
  config.dataset.name = "nyuv2"
  config.dataset.path = options.pop("path", "")
  train_size = int(options.pop("train_size", NYUV2_TRAIN))
  config.model.name = "segnet_mtan"
  config.model.backbone = config.model.shared_layers = config.model.task_layers = ()
  config.dense_augment.flip_left_right = True
  config.dense_augment.scales = (1.0, 1.2, 1.5)
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.schedule = "exponential"
  config.optimizer.staircase = True
  config.batch_size = 2
  config.eval_batch_size = 6
  config.num_epochs = EPOCHS
  config.keep_checkpoints = 2
  if options.pop("runlocal", None):
    config.model.kwargs = {"filters": (4, 8, 8, 8, 8)}
    config.num_epochs = 2
    config.steps_per_dispatch = 1
  if options:
    raise ValueError(f"unknown option(s) {sorted(options)} for configs/nyuv2.py")
  steps_per_epoch = max(1, train_size // config.batch_size)
  config.optimizer.half_life = DECAY_EPOCH * steps_per_epoch
  config.log_every = config.eval_every = config.checkpoint_every = steps_per_epoch
  return config
