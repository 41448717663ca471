"""The image MultiTaskTrainer: DataFrames of files in, a trained network and predictions out."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import mtl_jax as mj
from mtl_jax import trainer as trainer_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ["shape", "color", "size", "x"]
SMALL = dict(imshape=(16, 16), batch_size=8, shared_layers=[8], task_layers=[],
             task_types={"x": "regression"}, num_parallel_calls=2, dropout_rate=0.0)


class ConvBatchNorm(nn.Module):
  """A pretrained-style backbone with batch statistics."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    return nn.relu(nn.BatchNorm(use_running_average=not train)(x))


class Flatten(nn.Module):
  """A backbone tied to one input size."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(8)(x.reshape(len(x), -1))


@pytest.fixture(scope="module")
def shapes_csvs(tmp_path_factory):
  """48 generated 16x16 shape images (38 train, 10 val), 30% of labels missing; read-only."""
  return mj.data.make_shapes(str(tmp_path_factory.mktemp("shapes")), 48, imshape=(16, 16))


@pytest.fixture
def frames(shapes_csvs):
  return pd.read_csv(shapes_csvs[0]), pd.read_csv(shapes_csvs[1])


def _pretrained_batch_norm():
  module = ConvBatchNorm()
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  variables = module.init(jax.random.PRNGKey(0), x)
  _, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
  return module, jax.device_get({**variables, **updates})  # non-trivial running statistics


def _same(a, b) -> bool:
  return jax.tree.structure(a) == jax.tree.structure(b) and all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _any_leaf_changed(a, b) -> bool:
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ----------------------------------------------------------------------------------------------
# The backbone: frozen or trained.


@pytest.mark.slow
def test_a_frozen_backbone_keeps_its_variables_bit_for_bit_while_the_heads_train(tmp_path,
                                                                                  frames):
  module, variables = _pretrained_batch_norm()
  trainer = mj.MultiTaskTrainer(tmp_path, *frames, TASKS, (module, variables), train_fcn=False,
                                **SMALL)
  heads_before = jax.device_get(trainer.state.params)
  trainer.fit(1)
  fcn_module, fcn_variables = trainer.fcn
  assert fcn_module == module
  assert _same(fcn_variables, variables)  # params and batch statistics
  assert _any_leaf_changed(jax.device_get(trainer.state.params), heads_before)


@pytest.mark.slow
def test_a_trainable_backbone_changes_its_params_and_batch_statistics(tmp_path, frames):
  module, variables = _pretrained_batch_norm()
  trainer = mj.MultiTaskTrainer(tmp_path, *frames, TASKS, (module, variables), train_fcn=True,
                                **SMALL)
  trainer.fit(1)
  _, fcn_variables = trainer.fcn
  for collection in ("params", "batch_stats"):
    assert _any_leaf_changed(fcn_variables[collection], variables[collection]), collection


# ----------------------------------------------------------------------------------------------
# fit, evaluate, predict, save, load.


@pytest.mark.slow
def test_fit_evaluate_predict_save_and_load_round_trip(tmp_path, frames):
  train, val = frames
  downstream = dict(zip(val.filepath, ["a", "b"] * 5))
  trainer = mj.MultiTaskTrainer(tmp_path / "run", train, val, TASKS, [4, "p"], train_fcn=True,
                                task_weights="adaptive", augment=True,
                                downstream_labels=downstream, notes="round trip", **SMALL)
  final = trainer.fit(1)

  assert final == trainer.evaluate()
  assert final == pytest.approx(json.loads((tmp_path / "run" / "final_metrics.json").read_text()))
  assert {"val/shape/accuracy", "val/color/accuracy", "val/size/accuracy", "val/x/mae",
          "val/downstream/accuracy", "weight/shape", "weight/x"} <= set(final)
  run = json.loads((tmp_path / "run" / "run.json").read_text())
  assert run["config"]["notes"] == "round trip"
  assert [t["classes"] for t in run["tasks"][:3]] == [["circle", "square", "triangle"],
                                                      ["blue", "green", "red"],
                                                      ["large", "small"]]

  predictions = trainer.predict(val.filepath)
  assert list(predictions.columns) == [
      "filepath", "shape", "shape/circle", "shape/square", "shape/triangle", "color",
      "color/blue", "color/green", "color/red", "size", "size/large", "size/small", "x"]
  probabilities = predictions[["shape/circle", "shape/square", "shape/triangle"]].to_numpy()
  np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
  assert set(predictions["shape"]) <= {"circle", "square", "triangle"}
  pd.testing.assert_frame_equal(trainer.predict(val), predictions)  # a DataFrame works too

  trainer.save()
  loaded = mj.MultiTaskTrainer.load(tmp_path / "run")
  assert loaded.step == trainer.step
  pd.testing.assert_frame_equal(loaded.predict(val.filepath), predictions)
  assert loaded.evaluate() == pytest.approx(final)
  assert _same(loaded.fcn[1], trainer.fcn[1])


@pytest.mark.slow
def test_val_metrics_average_over_the_labelled_rows_only(tmp_path, frames):
  train, val = frames
  trainer = mj.MultiTaskTrainer(tmp_path, train, val, TASKS, [4, "p"], train_fcn=True, **SMALL)
  predictions = trainer.predict(val.filepath)
  labelled = val["shape"].notna()
  assert 0 < labelled.sum() < len(val)
  expected = (predictions["shape"][labelled] == val["shape"][labelled]).mean()
  assert trainer.evaluate()["val/shape/accuracy"] == pytest.approx(expected)


@pytest.mark.slow
def test_rerunning_fit_on_the_same_logdir_resumes_with_the_same_batches(tmp_path, frames):
  kwargs = dict(SMALL, fcn=[4, "p"], train_fcn=True, augment=True, dropout_rate=0.5,
                task_layers=["d"])
  straight = mj.MultiTaskTrainer(tmp_path / "straight", *frames, TASKS, **kwargs).fit(2)
  mj.MultiTaskTrainer(tmp_path / "stopped", *frames, TASKS, **kwargs).fit(1)
  # A new process running the same script: its fit(2) resumes at the end of epoch 1.
  resumed = mj.MultiTaskTrainer(tmp_path / "stopped", *frames, TASKS, **kwargs).fit(2)
  assert resumed == straight


# ----------------------------------------------------------------------------------------------
# Bad input: found before training, nothing written.


def _corrupt(path):
  path.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
  return str(path)


def test_missing_and_undecodable_files_are_listed_and_nothing_is_written(tmp_path, frames):
  train, val = frames
  train.loc[0, "filepath"] = str(tmp_path / "missing.png")
  train.loc[1, "filepath"] = _corrupt(tmp_path / "corrupt.png")
  logdir = tmp_path / "run"
  with pytest.raises(mj.ConfigError, match=r"2 of \d+ image files are missing or cannot be "
                     r"decoded: .*missing\.png, .*corrupt\.png") as error:
    mj.MultiTaskTrainer(logdir, train, val, TASKS, [4, "p"], **SMALL)
  assert "\n" not in str(error.value)
  assert not logdir.exists()


def test_skip_bad_files_warns_with_their_count_and_drops_their_rows(tmp_path, frames):
  train, val = frames
  train.loc[0, "filepath"] = str(tmp_path / "missing.png")
  val.loc[0, "filepath"] = _corrupt(tmp_path / "corrupt.png")
  with pytest.warns(UserWarning, match=r"skipping 2 image files .*'train': 1, 'val': 1"):
    trainer = mj.MultiTaskTrainer(tmp_path / "run", train, val, TASKS, [4, "p"],
                                  skip_bad_files=True, train_fcn=True, **SMALL)
  predictions = trainer.predict(val.filepath[1:])
  assert len(predictions) == len(val) - 1


def test_a_task_that_is_not_a_column_is_an_error_listing_the_columns(tmp_path, frames):
  with pytest.raises(mj.ConfigError, match=r"'colour' is not a column .*columns: \['filepath', "
                     r"'shape', 'color', 'size', 'x'\]"):
    mj.MultiTaskTrainer(tmp_path, *frames, ["shape", "colour"], [4, "p"], **SMALL)
  assert not os.listdir(tmp_path)


def test_a_task_without_train_labels_is_an_error(tmp_path, frames):
  train, val = frames
  train["size"] = None
  with pytest.raises(mj.ConfigError, match="'size' has no labels in the train labels"):
    mj.MultiTaskTrainer(tmp_path / "run", train, val, TASKS, [4, "p"], **SMALL)
  assert not (tmp_path / "run").exists()


def test_an_imshape_the_backbone_cannot_take_is_an_error_at_construction(tmp_path, frames):
  module = Flatten()
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(mj.ConfigError, match=r"imshape/num_channels \(16, 16, 3\)"):
    mj.MultiTaskTrainer(tmp_path / "run", *frames, TASKS, (module, variables), **SMALL)
  with pytest.raises(mj.ConfigError, match="larger imshape or fewer 'p' layers"):
    mj.MultiTaskTrainer(tmp_path / "run", *frames, TASKS, [4, "p", "p", "p", "p", "p"], **SMALL)
  assert not (tmp_path / "run").exists()


def test_a_weighting_that_reads_validation_batches_is_refused_before_any_work(tmp_path, frames):
  with pytest.raises(mj.ConfigError, match="'auto_lambda' reads validation batches"):
    mj.MultiTaskTrainer(tmp_path / "run", *frames, TASKS, [4, "p"], task_weights="auto_lambda",
                        **SMALL)
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_logdir_holding_another_run_is_refused(tmp_path, frames):
  mj.MultiTaskTrainer(tmp_path, *frames, TASKS, [4, "p"], lr=1e-3, train_fcn=True, **SMALL)
  with pytest.raises(mj.ConfigError, match=r"holds another run \(run\.config\.optimizer\."
                     r"learning_rate: 0\.001 -> 0\.01\)"):
    mj.MultiTaskTrainer(tmp_path, *frames, TASKS, [4, "p"], lr=1e-2, train_fcn=True, **SMALL)


# ----------------------------------------------------------------------------------------------
# Sampling order.


def test_shuffle_false_takes_each_epochs_examples_in_file_order():
  in_order = trainer_lib.InOrder(mj.data.Sampler(10, 4, seed=0))
  np.testing.assert_array_equal(in_order.indices([0, 1, 2]),
                                [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]])
  balanced = trainer_lib.InOrder(mj.data.Sampler(10, 4, seed=0, probabilities=np.ones(10)))
  first_epoch = balanced.indices([0, 1]).ravel()
  assert (np.diff(first_epoch) >= 0).all()


# ----------------------------------------------------------------------------------------------
# From a config file.


@pytest.mark.slow
def test_the_shapes_config_trains_from_the_command_line(tmp_path, run_main, monkeypatch):
  monkeypatch.chdir(REPO)
  code = run_main("--config=configs/shapes.py:generate=40,runlocal", f"--workdir={tmp_path}")
  assert code == 0
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  assert {"val/shape/accuracy", "val/x/mae", "weight/color"} <= set(final)


def test_a_bad_csv_path_exits_2_with_one_line(tmp_path, run_main, capsys, monkeypatch):
  monkeypatch.chdir(REPO)
  code = run_main("--config=configs/shapes.py", "--config.images.train_csv=/no/train.csv",
                  "--config.images.val_csv=/no/val.csv", f"--workdir={tmp_path / 'run'}")
  assert code == 2
  lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mtl_jax:")]
  assert lines == ["mtl_jax: error: config.images.train_csv='/no/train.csv': "
                   "FileNotFoundError: [Errno 2] No such file or directory: '/no/train.csv'"]
  assert not (tmp_path / "run").exists()
