"""Configuration errors: one line naming the problem, exit code 2 from the command line."""

import os
import subprocess
import sys

import pytest

from mtl_jax import config as config_lib
from mtl_jax.config import ConfigError, default_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _validated(**overrides):
  config = default_config()
  config.update(overrides)
  config_lib.validate(config_lib.complete(config), num_devices=8)


def test_the_default_config_is_valid():
  _validated()


def test_complete_fills_defaults_and_keeps_overrides():
  import ml_collections  # pylint: disable=import-outside-toplevel
  partial = ml_collections.ConfigDict({"optimizer": {"learning_rate": 0.1}, "tasks": ("digit",)})
  full = config_lib.complete(partial)
  assert full.optimizer.learning_rate == 0.1 and full.optimizer.name == "adam"
  assert full.tasks == ("digit",)


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 100}, "config.batch_size=100 does not divide over the 8 devices"),
    ({"weighting": "magic"}, "unknown config.weighting 'magic'"),
    ({"optimizer": {"name": "lbfgs"}}, "unknown config.optimizer.name 'lbfgs'"),
    ({"model": {"shared_layers": (64, "x")}}, "config.model.shared_layers: unknown layer 'x'"),
    ({"num_steps": 0}, "config.num_steps must be positive"),
])
def test_invalid_values_name_their_key(overrides, message):
  with pytest.raises(ConfigError, match=message):
    _validated(**overrides)


def test_unknown_keys_are_rejected_not_ignored():
  import ml_collections  # pylint: disable=import-outside-toplevel
  with pytest.raises(ConfigError, match="unknown key config.optimizer.lr"):
    config_lib.complete(ml_collections.ConfigDict({"optimizer": {"lr": 0.1}}))


def test_tasks_select_and_order_the_dataset_tasks():
  config = default_config()
  available = ("digit", "parity", "high")
  assert config_lib.select_tasks(config, available) == available
  config.tasks = ("parity", "digit")
  assert config_lib.select_tasks(config, available) == ("parity", "digit")
  config.tasks = ("digit", "colour")
  with pytest.raises(ConfigError, match="unknown task 'colour'"):
    config_lib.select_tasks(config, available)


def test_task_weights_select_manual_weighting():
  config = default_config()
  config.task_weights = (1.0, 0.5, 0.5)
  assert config_lib.weighting_name(config) == "manual"
  assert config_lib.weighting_kwargs(config) == {"weights": (1.0, 0.5, 0.5)}


def _cli(*args, devices=1):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.run([sys.executable, "-m", "mtl_jax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("args, message", [
    (["--config.optimiser.lr=1"], "unknown key config.optimiser.lr"),
    (["--config.weighting=magic"], "unknown config.weighting 'magic'"),
    (["--config.tasks=digit,colour"], "unknown task 'colour'"),
    (["--config.optimizer.learning_rate=abc"], "could not convert string to float: 'abc'"),
    (["--config.batch_size=100"], "config.batch_size=100 does not divide over the 8 devices"),
    (["--config=configs/nope.py"], "config file not found: configs/nope.py"),
    (["--config.weighting=uncertainty", "--config.weighting_kwargs.fomr=simple"],
     "unexpected keyword argument 'fomr'"),
])
def test_command_line_mistakes_print_one_line_and_exit_2(tmp_path, args, message):
  config = [] if any(a.startswith("--config=") for a in args) else ["--config=configs/digits.py"]
  result = _cli(*config, f"--workdir={tmp_path}", *args, devices=8)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("mtl_jax: error:"), result.stderr
  assert message in lines[0]
  assert "Traceback" not in result.stdout + result.stderr
