"""MultiMNIST with MultiLeNet, as in Sener and Koltun, "Multi-Task Learning as Multi-Objective
Optimization" (NeurIPS 2018): tasks `left` and `right`, 10 classes each.

    python -m mtl_jax.main --config=configs/multi_mnist.py --workdir=/tmp/multi_mnist \
        --config.dataset.path=/path/to/mnist.npz
    python -m mtl_jax.main --config=configs/multi_mnist.py:epochs=5 ... \
        --config.weighting=mgda --config.weighting_kwargs.grad_wrt=rep      # MGDA-UB

The dataset (`mtl_jax/data/multi_mnist.py`) is built from the MNIST .npz of `mnist`; the
model is `multi_lenet` (`mtl_jax/models/multi_lenet.py`). Where the numbers come from, in their
code (github.com/intel-isl/MultiObjectiveOptimization, commit 5d8e834) and its issue #14, in
which the first author gives the MultiMNIST setting ("optimizer=SGD|batch_size=256|lr=0.05|
normalization_type=none"):

- SGD with momentum 0.9, no weight decay: multi_task/train_multi_task.py, lines 63-64;
- learning rate 0.05, batches of 256: issue #14;
- 100 epochs: train_multi_task.py, line 27 (NUM_EPOCHS);
- the rate times 0.85 every 10 epochs (lines 81-84): here the smooth exponential decay with
  the same rate per epoch, a half-life of 10 * ln 2 / ln(1 / 0.85) = 42.65 epochs of 214 steps
  (55,000 training examples / 256), 9,127 steps; theirs steps down from epoch 10 on;
- inputs normalised by (0.1307, 0.3081): multi_task/datasets.py, line 14;
- MGDA-UB: `weighting = "mgda"` with `weighting_kwargs.grad_wrt = "rep"` (the gradients of the
  shared representation Z, train_multi_task.py lines 113-141) and no gradient normalisation
  (issue #14: normalization_type=none).

Not reproduced: their model selection ("we save each model during training after each epoch.
Then, we choose the model with the highest validation accuracy and test it", issue #14; their
validation set was the test set, datasets.py line 25): here the final model is evaluated. The
default weighting `equal` sums the two losses (weights 1, 1); the paper's "uniform scaling"
averages them (0.5, 0.5: `--config.task_weights="(0.5, 0.5)"`), which under SGD is the same
run at half the learning rate.

Training runs one step per dispatch (`steps_per_dispatch = 1`): on CPU a step inside a longer
dispatch's `lax.scan` is ~8x slower for this convnet (19 against 153 ms at batch 256, 2 cores).

The optional argument after ":" is a comma-separated list: `runlocal` shrinks the run to a
quick check (300 steps), `epochs=N` trains N epochs instead of 100 (the schedule per epoch is
unchanged, so the rate is cut short rather than compressed).
"""

import math

from mtl_jax.config import default_config, parse_options

EPOCHS = 100
STEPS_PER_EPOCH = 55_000 // 256  # 60,000 training images less the 5,000 set aside for val
HALF_LIFE_EPOCHS = 10 * math.log(2) / math.log(1 / 0.85)


def get_config(arg: str | None = None):
  config = default_config()
  options = parse_options(arg)
  config.dataset.name = "multi_mnist"
  config.dataset.normalize = (0.1307, 0.3081)
  config.model.name = "multi_lenet"
  config.model.backbone = config.model.shared_layers = config.model.task_layers = ()
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.schedule = "exponential"
  config.optimizer.half_life = round(HALF_LIFE_EPOCHS * STEPS_PER_EPOCH)
  config.batch_size = 256
  config.num_epochs = int(options.pop("epochs", EPOCHS))
  # One step per jit call: XLA:CPU runs the convolutions' weight gradients ~8x slower inside
  # the `lax.scan` of longer dispatches (mtl_jax.train.make_train_fn).
  config.steps_per_dispatch = 1
  config.log_every = STEPS_PER_EPOCH
  config.eval_every = config.checkpoint_every = 10 * STEPS_PER_EPOCH
  if options.pop("runlocal", None):
    config.num_epochs = 0
    config.num_steps = 300
    config.log_every = config.eval_every = config.checkpoint_every = 100
  if options:
    raise ValueError(f"unknown option(s) {sorted(options)} for configs/multi_mnist.py")
  return config
