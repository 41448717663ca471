"""CelebA's 40 binary face attributes as 40 tasks, read through TFDS `celeb_a`.

    python -m mtl_jax.main --config=configs/celeba.py --workdir=/tmp/celeba
    python -m mtl_jax.main --config=configs/celeba.py:runlocal --workdir=/tmp/celeba_local \
        --config.dataset.tfds.data_dir=/data/tfds

The first run downloads and prepares `celeb_a` into TFDS's data directory (or
`config.dataset.tfds.data_dir`); TFDS fetches CelebA from Google Drive, which can refuse
when its quota is spent, and then the run stops with one line naming the dataset and the
directory (exit 2), as it does without internet. `attributes/*` makes one binary task per
attribute (`Smiling`, `Male`, ...). Images (218x178) are resized to 64x64 and held in memory
as float32, about 8 GB for the 162,770 training images (`config.dataset.tfds.max_examples`
reads fewer); validation is CelebA's own split. A conv backbone (32, 64, 128 filters, each
followed by 2x2 max pooling) and a shared 3x3 conv of 128 feed 40 heads (global max pooling,
one logit); Adam 1e-3, batches of 128, 3 epochs. Tested on mock data only
(`tfds.testing.mock_data`), never on the real images.

The optional argument after ":" is a comma-separated list: `runlocal` shrinks the run to a
quick check (the first 256 examples of each split at 16x16, a tiny network, 20 steps).
"""

from mtl_jax.config import default_config, parse_options


def get_config(arg: str | None = None):
  config = default_config()
  options = parse_options(arg)
  config.dataset.name = "tfds"
  tfds = config.dataset.tfds
  tfds.name = "celeb_a"
  tfds.val_split = "validation"
  tfds.image_size = (64, 64)
  tfds.task_features = {"attributes": "attributes/*"}
  config.model.backbone = (32, "p", 64, "p", 128, "p")
  config.model.shared_layers = (128,)
  config.model.task_layers = ()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.batch_size = config.eval_batch_size = 128
  config.num_epochs = 3
  config.log_every = 200
  config.eval_every = config.checkpoint_every = 1000
  if options.pop("runlocal", None):
    tfds.image_size = (16, 16)
    tfds.max_examples = 256
    config.model.backbone = (8, "p")
    config.model.shared_layers = (8,)
    config.batch_size = config.eval_batch_size = 32
    config.num_epochs = 0
    config.num_steps = 20
    config.steps_per_dispatch = 10
    config.log_every = config.eval_every = config.checkpoint_every = 10
  if options:
    raise ValueError(f"unknown option(s) {sorted(options)} for configs/celeba.py")
  return config
