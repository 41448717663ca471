"""config.best_metric: the best validation state is kept beside the latest, and loads."""

import json

import pytest

import mtl_jax as mj
from mtl_jax import events


@pytest.mark.slow
def test_the_best_state_by_a_validation_loss_is_kept_and_loads(tmp_path, tiny_config):
  tiny_config.best_metric = "val/digit/loss"  # lower is better
  tiny_config.eval_every = 50
  mj.train_and_evaluate(tiny_config, str(tmp_path))
  losses = events.read_scalars(str(tmp_path))["val/digit/loss"]
  record = json.loads((tmp_path / "best.json").read_text())
  best_step = min(losses, key=losses.get)
  assert record == {"metric": "val/digit/loss", "step": best_step,
                    "value": pytest.approx(losses[best_step], rel=1e-6)}
  assert mj.load(tmp_path, best=True).step == best_step
  assert mj.load(tmp_path).step == 200


@pytest.mark.parametrize("name, message", [
    ("digit/accuracy", "expected 'val/<task>/<metric>'"),
    ("val/colour/accuracy", "expected 'val/<task>/<metric>' with a task among"),
    ("val/digit/acc", r"the validation metrics of 'digit' are \['val/digit/accuracy'"),
])
def test_a_bad_best_metric_is_one_error_before_anything_is_written(tmp_path, tiny_config, name,
                                                                   message):
  tiny_config.best_metric = name
  with pytest.raises(mj.ConfigError, match=message):
    mj.train_and_evaluate(tiny_config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
