"""Configuration errors: one line naming the problem, exit code 2 from the command line."""

import os
import subprocess
import sys
import warnings

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


# ----------------------------------------------------------------------------------------------
# The command line. One subprocess shows that a mistake prints one line and exits 2; the
# messages of each kind of mistake are checked in this process, through the same functions.


def test_a_command_line_mistake_prints_one_line_and_exits_2(tmp_path):
  # A mistake found deep inside: a free-form hyper-parameter the method does not take.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  result = subprocess.run(
      [sys.executable, "-m", "mtl_jax.main", "--config=configs/digits.py",
       f"--workdir={tmp_path}", "--config.weighting=uncertainty",
       "--config.weighting_kwargs.fomr=simple"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("mtl_jax: error:"), result.stderr
  assert ("has no hyper-parameter 'fomr'; its hyper-parameters: form, init_log_variance"
          in lines[0])
  assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture
def command_line(monkeypatch):
  """`python -m mtl_jax.main`'s parsing in this process: args -> the config main() trains.

  A mistake in the flags exits as there (SystemExit). absl's flags are global: the override
  flags a parse defines are deleted after it, and every flag is unparsed.
  """
  from absl import flags  # pylint: disable=import-outside-toplevel
  from mtl_jax import main  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(sys, "argv", list(sys.argv))  # main._parse_flags rewrites sys.argv
  free_form = main._FREE_FORM_PREFIXES  # pylint: disable=protected-access
  for prefix in free_form:
    monkeypatch.setitem(free_form, prefix, {})
  defined = set(flags.FLAGS)

  def parse(*args):
    try:
      with warnings.catch_warnings():  # ml_collections loads the config file with load_module
        warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
        main._parse_flags(["mtl_jax.main", *args])  # pylint: disable=protected-access
      config = config_lib.complete(main._CONFIG.value)  # pylint: disable=protected-access
      main._apply_free_form(config)  # pylint: disable=protected-access
      return config
    finally:
      for name in set(flags.FLAGS) - defined:
        delattr(flags.FLAGS, name)
      flags.FLAGS.unparse_flags()

  return parse


DIGITS = f"--config={os.path.join(REPO, 'configs', 'digits.py')}"


@pytest.mark.parametrize("args, message", [
    ([DIGITS, "--config.optimiser.lr=1"], "unknown key config.optimiser.lr"),
    ([DIGITS, "--config.optimizer.learning_rate=abc"],
     "could not convert string to float: 'abc'"),
    (["--config=configs/nope.py"], "config file not found: configs/nope.py"),
])
def test_flag_mistakes_exit_2_with_one_line(command_line, capsys, args, message):
  with pytest.raises(SystemExit) as exit_:
    command_line(*args, "--workdir=/unused")
  assert exit_.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("mtl_jax: error:"), lines
  assert message in lines[0]


@pytest.mark.parametrize("args, message", [
    (["--config.weighting=magic"], "unknown config.weighting 'magic'"),
    (["--config.tasks=digit,colour"], "unknown task 'colour'"),
    (["--config.batch_size=100"], "config.batch_size=100 does not divide over the 8 devices"),
    (["--config.weighting=uncertainty", "--config.weighting_kwargs.fomr=simple"],
     "has no hyper-parameter 'fomr'; its hyper-parameters: form, init_log_variance"),
    (["--config.weighting_kwargs.log_losses=True"],
     "weighting 'equal': log_losses=True runs a gradient method.*'si'"),
    (["--config.weighting=ntkmtl_sr", "--config.weighting_kwargs.grad_wrt=params"],
     "'ntkmtl_sr' is defined on representation gradients only"),
    (["--config.model.name=mmeo"], "unknown config.model.name 'mmeo'"),
    (["--config.model.name=mmoe", "--config.model.kwargs.num_expert=8"],
     "config.model: model 'mmoe'.*unexpected keyword argument 'num_expert'"),
    (["--config.model.name=mmoe", "--config.model.kwargs.num_experts=0"],
     "config.model: .*num_experts"),
])
def test_config_mistakes_on_the_command_line_are_one_line_config_errors(command_line, tmp_path,
                                                                       args, message):
  """main() prints a ConfigError as one line and exits 2 (the subprocess test above)."""
  import jax  # pylint: disable=import-outside-toplevel
  from mtl_jax import sharding, train  # pylint: disable=import-outside-toplevel
  config = command_line(DIGITS, f"--workdir={tmp_path}", *args)
  with pytest.raises(ConfigError, match=message) as error:
    train.train_and_evaluate(config, str(tmp_path), mesh=sharding.make_mesh(jax.devices()))
  assert "\n" not in str(error.value)


def test_help_lists_every_config_key_with_its_default_and_meaning_and_exits_0(run_main, capsys):
  assert run_main("--help") == 0
  out = capsys.readouterr().out
  assert "--workdir: Directory for checkpoints and metrics." in out
  lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  --config.")}
  assert "the peak rate of the schedule" in lines["--config.optimizer.learning_rate=0.002"]
  assert "--config.weighting='equal'" in lines
  flat = lambda c, p="": [k for key, v in c.items() for k in (
      flat(v, f"{p}{key}.") if hasattr(v, "items") and len(v) else [f"{p}{key}"])]
  assert len(lines) == len(flat(default_config()))
  undocumented = [k for k, line in lines.items() if len(line.split(None, 1)) < 2]
  assert not undocumented, f"keys of default_config() without a comment: {undocumented}"
