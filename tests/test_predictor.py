"""`mj.load(workdir)`: any run's model back, predicting a DataFrame with class names."""

import os
import shutil

import flax.linen as nn
import jax
import numpy as np
import pandas as pd
import pytest

import mtl_jax as mj

SMALL = ["--config.model.shared_layers=(32,)", "--config.model.task_layers=(16,)",
         "--config.steps_per_dispatch=25"]


class Backbone(nn.Module):
  """A user backbone at module level, so the run can pickle it for `load`."""

  @nn.compact
  def __call__(self, x, train=False):
    return nn.relu(nn.Dense(16)(x))


@pytest.mark.slow
def test_a_command_line_digits_run_predicts_its_test_accuracy(tmp_path, run_main, capsys):
  workdir = tmp_path / "digits"
  assert run_main("--config=configs/digits.py:runlocal", f"--workdir={workdir}", *SMALL) == 0
  out = capsys.readouterr().out
  assert "task    metric       val    test" in out and f"{workdir}/curves.png" in out
  assert (workdir / "curves.png").stat().st_size > 0
  predictor = mj.load(workdir)
  config = mj.default_config()
  test = mj.data.load(config.dataset).test
  frame = predictor.predict(test.inputs)
  final = pd.read_json(workdir / "final_metrics.json", typ="series")
  for task in predictor.tasks:
    truth = np.asarray(task.classes, dtype=object)[test.labels[task.name]]
    assert np.mean(frame[task.name].to_numpy() == truth) == pytest.approx(
        final[f"test/{task.name}/accuracy"], abs=1e-6)
    assert np.allclose(frame[[f"{task.name}/{c}" for c in task.classes]].sum(axis=1), 1.0)
  # A run killed after its first checkpoint loads that checkpoint.
  os.remove(workdir / "final_metrics.json")
  shutil.rmtree(workdir / "checkpoints" / "200")
  assert mj.load(workdir).step == 100


@pytest.mark.slow
def test_an_arrays_run_with_a_user_backbone_predicts_class_names(tmp_path, tiny_config):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 6)).astype(np.float32)
  labels = {"animal": np.where(x[:, 0] > 0, "cat", "dog"), "size": x[:, 1] * 2.0}
  data = mj.from_arrays(x, labels, task_types={"size": "regression"})
  tiny_config.num_steps = tiny_config.log_every = tiny_config.checkpoint_every = 50
  mj.train_and_evaluate(tiny_config, str(tmp_path), data=data, backbone=Backbone())
  assert (tmp_path / "curves.png").exists()
  frame = mj.load(tmp_path).predict(x[:5])  # the backbone comes back from the workdir
  assert list(frame.columns) == ["animal", "animal/cat", "animal/dog", "size"]
  assert set(frame["animal"]) <= {"cat", "dog"} and frame["size"].dtype == np.float32


@pytest.mark.slow
def test_an_image_run_loads_as_its_trainer_and_its_backbone_saves_as_a_pair(tmp_path):
  train_csv, val_csv = mj.data.make_shapes(str(tmp_path / "shapes"), 40, imshape=(16, 16))
  trainer = mj.MultiTaskTrainer(
      str(tmp_path / "run"), pd.read_csv(train_csv), pd.read_csv(val_csv), ["shape", "color"],
      fcn=[4, "p"], shared_layers=[], task_layers=[], imshape=(16, 16), batch_size=16)
  trainer.fit(1)
  assert (tmp_path / "run" / "curves.png").exists()
  loaded = mj.load(tmp_path / "run")
  assert isinstance(loaded, mj.MultiTaskTrainer)
  frame = loaded.predict(pd.read_csv(val_csv).filepath[:3])
  assert set(frame["shape"]) <= {"circle", "square", "triangle"}
  mj.save_backbone(tmp_path / "backbone", trainer.fcn)
  module, variables = mj.load_backbone(tmp_path / "backbone")
  assert module == trainer.fcn[0]
  saved, trained = (jax.tree.leaves(v) for v in (variables, trainer.fcn[1]))
  assert len(saved) == len(trained) and all(np.array_equal(a, b) for a, b in zip(saved, trained))


def test_a_workdir_without_a_run_is_one_clear_error(tmp_path):
  with pytest.raises(mj.ConfigError, match="no run in .* \\(no run.json\\)"):
    mj.load(tmp_path)
