"""The course-notebook workload on MNIST: two tasks, `digit` (10 classes) and `parity`.

    python -m mtl_jax.main --config=configs/mnist.py --workdir=/tmp/mnist \
        --config.dataset.path=/path/to/mnist.npz
    python -m mtl_jax.main --config=configs/mnist.py --workdir=/tmp/mnist_tfds

The .npz holds `train_images` uint8 [N, 28, 28], `train_labels`, `test_images`, `test_labels`
(see `mtl_jax/data/mnist.py`). Without a path the same arrays come from TFDS `mnist`, downloaded
on the first run into TFDS's data directory (`--config.dataset.tfds.data_dir` to choose; without
internet and without prepared data the run stops with one line, exit 2). Inputs are flattened
to 784 values and normalised with MNIST's mean 0.1307 and std 0.3081; a backbone Dense(100) +
ReLU feeds a Dense(10) head and a Dense(2) head, whose losses are weighted 1.0 and 0.5; SGD,
rate 1e-3 (constant), momentum 0.9, Nesterov, weight decay 1e-4, batches of 128, 10 epochs.

The optional argument after ":" is a comma-separated list: `runlocal` shrinks the run to a
quick check (200 steps).
"""

from mtl_jax.config import default_config, parse_options


def get_config(arg: str | None = None):
  config = default_config()
  options = parse_options(arg)
  config.dataset.name = "mnist"
  config.dataset.flatten = True
  config.dataset.normalize = (0.1307, 0.3081)
  config.model.backbone = (100,)
  config.model.shared_layers = ()
  config.model.task_layers = ()
  config.task_weights = (1.0, 0.5)  # digit, parity
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "constant"
  config.batch_size = 128
  config.num_epochs = 10
  config.log_every = 200
  config.eval_every = config.checkpoint_every = 1000
  if options.pop("runlocal", None):
    config.num_epochs = 0
    config.num_steps = 200
    config.log_every = config.eval_every = config.checkpoint_every = 100
  if options:
    raise ValueError(f"unknown option(s) {sorted(options)} for configs/mnist.py")
  return config
