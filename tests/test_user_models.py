"""A researcher's own modules: heads (`heads=`) or a whole model (`model=`) meeting the contract
of `mtl_jax.models.base`, through `train_and_evaluate` and the image `MultiTaskTrainer`; and
the task kinds of a CelebA-style attribute table."""

import flax.linen as nn
import jax
import numpy as np
import pandas as pd
import pytest

import mtl_jax as mj

from contract_models import FrozenTrunk


class Backbone(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Dense(100)(x))


class SeedModel(nn.Module):
  """The seed library's GenericMultitaskModel(backbone, task_heads), written by a user."""
  shared_modules = ("backbone",)

  def setup(self):
    self.backbone = Backbone()
    self.heads = {"digit": nn.Dense(10), "parity": nn.Dense(2)}

  def __call__(self, x, *, train=False):
    z = self.backbone(x)
    return {task: head(z) for task, head in self.heads.items()}


def _seed_config():
  """The course notebook: task weights 1.0 and 0.5, SGD with Nesterov momentum."""
  config = mj.default_config()
  config.model.shared_layers = ()  # backbone -> heads
  config.task_weights = (1.0, 0.5)
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  config.optimizer.nesterov = True
  config.num_steps = config.log_every = config.eval_every = config.checkpoint_every = 200
  return config


@pytest.fixture(scope="module")
def digits():
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  x, y = load_digits(return_X_y=True)
  return mj.from_arrays(x / 16.0, {"digit": y, "parity": y % 2})


@pytest.mark.slow
def test_the_seed_style_model_trains_from_heads_and_the_same_from_a_user_module(
    tmp_path, digits, one_device):
  heads = {"digit": nn.Dense(10), "parity": nn.Dense(2)}
  from_heads = mj.train_and_evaluate(_seed_config(), str(tmp_path / "heads"), data=digits,
                                     backbone=Backbone(), heads=heads, mesh=one_device)
  assert from_heads["weight/digit"] == 1.0 and from_heads["weight/parity"] == 0.5
  assert from_heads["test/digit/accuracy"] > 0.9 and from_heads["test/parity/accuracy"] > 0.9
  from_model = mj.train_and_evaluate(_seed_config(), str(tmp_path / "model"), data=digits,
                                     model=SeedModel(), mesh=one_device)
  # The same parameter names give the same initialisation: the same run, the same numbers.
  assert from_model == pytest.approx(from_heads, rel=1e-5, abs=1e-6)


def test_giving_a_whole_model_and_its_parts_is_an_error(tmp_path, digits):
  with pytest.raises(mj.ConfigError, match="not both"):
    mj.train_and_evaluate(_seed_config(), str(tmp_path), data=digits, model=SeedModel(),
                          backbone=Backbone())
  assert not (tmp_path / "run.json").exists()


def test_heads_for_other_tasks_are_an_error_before_anything_is_written(tmp_path, digits):
  with pytest.raises(mj.ConfigError, match="heads are given for"):
    mj.train_and_evaluate(_seed_config(), str(tmp_path / "run"), data=digits,
                          backbone=Backbone(), heads={"digit": nn.Dense(10)})
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_forty_binary_attributes_with_missing_cells_and_regression_losses_train(
    tmp_path, one_device):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 16)).astype(np.float32)
  weights = rng.normal(size=(16, 40))
  table = pd.DataFrame(x @ weights > 0, columns=[f"attr_{i}" for i in range(40)])
  table = table.mask(rng.random(table.shape) < 0.3)  # 30% of the cells missing
  labels = {name: table[name].to_numpy(object) for name in table}
  labels["age"] = x[:, 0] * 3 + 0.5  # predicting the mean leaves an MAE of about 2.4
  labels["score"] = x[:, 1]

  def cauchy(outputs, labels, mask):  # a robust loss of the user's own
    del mask
    return jax.numpy.log1p((outputs - labels) ** 2)  # outputs f32[B]: one value per label

  data = mj.from_arrays(x, labels, task_types={**{n: "binary" for n in table},
                                               "age": "regression", "score": "regression"},
                        task_losses={"age": "huber", "score": cauchy})
  assert [t.kind for t in data.tasks[:2]] == ["binary", "binary"]
  config = mj.default_config()
  config.model.shared_layers, config.model.task_layers = (32,), ()
  config.num_steps = config.log_every = config.eval_every = config.checkpoint_every = 300
  final = mj.train_and_evaluate(config, str(tmp_path), data=data, mesh=one_device)
  accuracies = [final[f"test/attr_{i}/accuracy"] for i in range(40)]
  assert min(accuracies) > 0.75 and np.mean(accuracies) > 0.85
  assert all(0.5 < final[f"test/attr_{i}/auc"] <= 1.0 for i in range(40))
  assert final["test/age/mae"] < 1.0 and final["test/score/mae"] < 0.5


# ----------------------------------------------------------------------------------------------
# The image MultiTaskTrainer.

IMAGE_TASKS = ["shape", "x"]
SMALL = dict(imshape=(16, 16), batch_size=8, task_types={"x": "regression"},
             num_parallel_calls=2)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
  train, val = mj.data.make_shapes(str(tmp_path_factory.mktemp("shapes")), 48, imshape=(16, 16))
  return pd.read_csv(train), pd.read_csv(val)


@pytest.mark.slow
def test_the_trainer_takes_a_whole_user_model_frozen_augmented_and_probed(tmp_path, frames,
                                                                           one_device):
  train, val = frames
  model = FrozenTrunk(tasks=tuple(IMAGE_TASKS), widths=(3, 1))
  trainer = mj.MultiTaskTrainer(
      tmp_path / "run", train, val, IMAGE_TASKS, model=model, augment=True, mesh=one_device,
      downstream_labels=dict(zip(val.filepath, ["a", "b"] * 5)), **SMALL)
  frozen_before = jax.device_get(trainer.state.frozen)
  heads_before = jax.device_get(trainer.state.params)
  final = trainer.fit(1)
  assert {"val/shape/accuracy", "val/x/mae", "val/downstream/accuracy"} <= set(final)
  same = jax.tree.map(np.array_equal, frozen_before, jax.device_get(trainer.state.frozen))
  assert jax.tree.leaves(frozen_before) and all(jax.tree.leaves(same))  # batch stats too
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), heads_before,
                       jax.device_get(trainer.state.params))
  assert all(jax.tree.leaves(moved))
  predictions = trainer.predict(val.filepath)
  assert list(predictions.columns) == ["filepath", "shape", "shape/circle", "shape/square",
                                       "shape/triangle", "x"]
  trainer.save()
  loaded = mj.MultiTaskTrainer.load(tmp_path / "run", mesh=one_device)
  pd.testing.assert_frame_equal(loaded.predict(val.filepath), predictions)


@pytest.mark.slow
def test_the_trainer_takes_user_heads_on_a_registered_architecture(tmp_path, frames, one_device):
  train, val = frames
  heads = {"shape": nn.Sequential([lambda z: z.mean(axis=(1, 2)), nn.Dense(3)]),
           "x": nn.Sequential([lambda z: z.mean(axis=(1, 2)), nn.Dense(1)])}
  with pytest.warns(UserWarning, match="cannot be saved"):  # lambdas do not pickle
    trainer = mj.MultiTaskTrainer(tmp_path, train, val, IMAGE_TASKS, [4, "p"], heads=heads,
                                  architecture="mtan", architecture_kwargs={"attention_ratio": 0.5},
                                  shared_layers=(4, "p", 6), task_weights="mgda",
                                  mesh=one_device, **SMALL)
  assert {"backbone", "attention_shape", "attention_x", "heads_shape",
          "heads_x"} <= set(trainer.state.params)
  final = trainer.fit(1)
  assert np.isfinite(final["val/x/mae"]) and 0 <= final["val/shape/accuracy"] <= 1
  with pytest.raises(mj.ConfigError, match="pass them to MultiTaskTrainer.load"):
    mj.MultiTaskTrainer.load(tmp_path, mesh=one_device)
  loaded = mj.MultiTaskTrainer.load(tmp_path, mesh=one_device, heads=heads)
  assert loaded.config.model.kwargs.to_dict() == {"attention_ratio": 0.5}
  pd.testing.assert_frame_equal(loaded.predict(val.filepath), trainer.predict(val.filepath))


def test_trainer_defaults_are_default_configs_so_a_config_file_makes_the_same_run():
  from mtl_jax import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  import importlib.util  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "shapes.py")
  spec = importlib.util.spec_from_file_location("shapes_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  from_file = mj.config.complete(module.get_config())
  # The README's trainer: the same keys as configs/shapes.py, nothing else given.
  from_trainer = trainer_lib.trainer_config(
      ["shape", "color", "size", "x"], [16, "p", 32, "p", 64, "p"], shared_layers=[64],
      task_layers=[], task_types={"x": "regression"}, imshape=(64, 64), batch_size=32,
      lr=2e-3)
  ignore = ("tasks", "num_epochs", "log_every", "eval_every", "checkpoint_every", "images")
  flat = lambda c: {k: v for k, v in c.to_dict().items() if k not in ignore}
  assert flat(from_trainer) == flat(from_file)
  for key in ("imshape", "task_types", "num_channels", "norm", "balance_probs", "shuffle"):
    assert from_trainer.images[key] == from_file.images[key], key
