"""What a run promises when its inputs are wrong or its machine misbehaves (issue 14).

Each mistake is one line and exit 2 before any work or file; damaged checkpoints are skipped
for the newest one that restores; one run per workdir; nothing non-finite is ever saved;
SIGTERM at any moment exits 0 saying what was saved. The end-to-end runs are small digits runs
through the command line in this process (`run_main`), sharing one finished run.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import mtl_jax as mj
from mtl_jax import checkpoint, guard, interrupt, validate, workdir_lock
from mtl_jax.data import frames
from mtl_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = f"--config={os.path.join(REPO, 'configs', 'digits.py')}"
NUM_STEPS, EVERY = 40, 20
# A short digits run of a small model: checkpoints at steps 20 and 40.
SMALL = [DIGITS, f"--config.num_steps={NUM_STEPS}", f"--config.checkpoint_every={EVERY}",
         f"--config.eval_every={EVERY}", f"--config.log_every={EVERY}",
         f"--config.steps_per_dispatch={EVERY}", "--config.model.shared_layers=(16,)",
         "--config.model.task_layers=(8,)"]


def _one_error_line(capsys) -> str:
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("mtl_jax: error:"), lines
  return lines[0]


# ----------------------------------------------------------------------------------------------
# Validation: one line, exit 2, before any data is loaded or any file written.


def _config_file(tmp_path, body: str) -> str:
  path = tmp_path / "bad_config.py"
  path.write_text(body)
  return f"--config={path}"


@pytest.mark.parametrize("args, message", [
    (["--config.task_weights=abc"], "config.task_weights must be numbers"),
    (["--config.task_weights=(nan,1,1)"], "config.task_weights must be finite numbers"),
    (["--config.seed=-1"], "config.seed must be an int >= 0, got -1"),
    (["--config.optimizer.weight_decay=-1"], "config.optimizer.weight_decay must be a finite"),
    (["--config.optimizer.grad_clip_norm=-1"], "config.optimizer.grad_clip_norm must be"),
    (["--config.optimizer.momentum=1.0"], r"config.optimizer.momentum must be in \[0, 1\)"),
    (["--config.optimizer.warmup_steps=-5"], "config.optimizer.warmup_steps must be"),
    (["--config.dataset.missing_fraction=0.9999"],
     "task 'digit' has no labelled example in the train split"),
    (["--config.model.shared_layers=(32,'p')"], "layer 'p' .* needs images"),
    (["--config.augment.flip=True"], r"config.augment: unknown augment option\(s\) \['flip'\]"),
])
def test_a_bad_value_is_one_line_and_exit_2_with_the_workdir_untouched(run_main, capsys,
                                                                        tmp_path, args, message):
  workdir = tmp_path / "run"
  assert run_main(DIGITS, f"--workdir={workdir}", *args) == 2
  assert re.search(message, _one_error_line(capsys))
  assert not workdir.exists()


def test_a_workdir_that_cannot_be_one_is_refused_before_work(run_main, capsys, monkeypatch,
                                                             tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("")
  assert run_main(DIGITS, f"--workdir={a_file}") == 2
  assert "is a file, not a directory" in _one_error_line(capsys)
  assert run_main(DIGITS, f"--workdir={a_file}/run") == 2
  assert f"lies under {a_file}, which is a file" in _one_error_line(capsys)
  locked = tmp_path / "locked"
  locked.mkdir(mode=0o500)
  if os.geteuid() == 0:  # root writes anywhere: the permission check answers as for a user
    real_access = os.access
    monkeypatch.setattr(validate.os, "access", lambda path, mode: (
        False if os.path.abspath(path) == str(locked) else real_access(path, mode)))
  assert run_main(DIGITS, f"--workdir={locked}/run") == 2
  assert f"{locked} is not writable" in _one_error_line(capsys)
  assert not (locked / "run").exists()


@pytest.mark.parametrize("body, message", [
    ("x = 1\n", "has no get_config() function"),
    ("def get_config():\n  return None\n", "get_config() returned None"),
])
def test_a_config_file_without_a_config_is_one_line(run_main, capsys, monkeypatch, tmp_path,
                                                     body, message):
  # ml_collections loads every config file as module "config_config", reusing an earlier one
  monkeypatch.delitem(sys.modules, "config_config", raising=False)
  assert run_main(_config_file(tmp_path, body), f"--workdir={tmp_path / 'run'}") == 2
  assert message in _one_error_line(capsys)


def test_a_task_without_validation_labels_is_refused():
  tasks = (mj.Task("digit", classes=(0, 1)),)
  validate.check_labelled({"train": {"digit": np.array([0, 1])}}, tasks)
  with pytest.raises(ConfigError, match="task 'digit' has no labelled example in the val"):
    validate.check_labelled({"val": {"digit": np.array([-1, -1])}}, tasks)


def test_free_form_blocks_are_settable_from_the_command_line(monkeypatch):
  from mtl_jax import main  # pylint: disable=import-outside-toplevel
  for prefix in main._FREE_FORM_PREFIXES:  # pylint: disable=protected-access
    monkeypatch.setitem(main._FREE_FORM_PREFIXES, prefix, {})  # pylint: disable=protected-access
  rest = main._split_free_form([  # pylint: disable=protected-access
      "prog", "--config.augment.zoom_scale=0.2", "--config.images.task_types.size=regression",
      "--config.seed=3"])
  assert rest == ["prog", "--config.seed=3"]
  config = mj.default_config()
  main._apply_free_form(config)  # pylint: disable=protected-access
  assert config.augment.zoom_scale == 0.2 and config.images.task_types.size == "regression"


def test_label_hygiene_warns_with_counts_and_refuses_conflicting_duplicates():
  train = pd.DataFrame({"path": ["a", "b", "c", "d", "e"], "y": [1, "1", "nan", "None", 2]})
  val = pd.DataFrame({"path": ["a", "f"], "y": [1, 2]})
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    frames.check_label_hygiene({"train": train, "val": val}, ["y"], "path")
  messages = " | ".join(str(w.message) for w in caught)
  assert "1 value(s) appear both as a number and as a string (1; 3 labels)" in messages
  assert "2 labels are the string(s) ['None', 'nan']" in messages
  assert "1 file(s) are in both the train and the val labels (e.g. a)" in messages
  twice = pd.DataFrame({"path": ["a", "a", "b", "b"], "y": [1, 2, 3, 3]})
  with pytest.raises(ConfigError, match=r"1 file\(s\) are listed more than once in the train "
                                        r"labels with different labels \(e.g. a\)"):
    frames.check_label_hygiene({"train": twice}, ["y"], "path")


def test_a_long_list_of_bad_files_is_written_out_in_full():
  bad = [f"img_{i}.png" for i in range(12)]
  assert validate.name_bad_files(bad[:2]) == "img_0.png, img_1.png"
  message = validate.name_bad_files(bad)
  assert message.startswith("img_0.png, img_1.png, img_2.png, img_3.png, img_4.png ... (all 12 ")
  listed = message.rsplit("listed in ", 1)[1].rstrip(")")
  with open(listed, encoding="utf-8") as f:
    assert f.read().split() == bad
  os.remove(listed)


# ----------------------------------------------------------------------------------------------
# The non-finite guard.


def test_a_non_finite_optimizer_state_stops_the_run_before_it_is_saved(tmp_path):
  # Inputs of 1e15 and a linear model: losses ~1e28 stay finite, squared gradients (Adam's
  # second moments) overflow float32 at the first step.
  inputs = np.full((40, 2), 1e15, np.float32)
  labels = {"y": np.zeros(40, np.float32)}
  dataset = mj.from_arrays(inputs, labels, task_types={"y": "regression"},
                           val=(inputs[:8], {"y": labels["y"][:8]}),
                           test=(inputs[:8], {"y": labels["y"][:8]}))
  config = mj.default_config()
  config.model.shared_layers, config.model.task_layers = (), ()
  config.batch_size = config.eval_batch_size = 8
  config.num_steps, config.steps_per_dispatch = 10, 1
  config.log_every = config.eval_every = config.checkpoint_every = 1
  with pytest.raises(mj.NonFiniteLossError) as error:
    mj.train_and_evaluate(config, str(tmp_path), data=dataset)
  assert str(error.value) == (
      "non-finite values in the optimizer state after step 1 (losses finite); stopped without "
      "saving, no checkpoint was saved yet")
  assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]


def test_the_guard_names_each_bad_part_and_the_last_good_checkpoint():
  summary = {"bad_step": np.int32(-1), "bad_tasks": np.zeros(2, bool),
             "finite_state": np.array([True, True, False, True, False])}
  assert not guard.is_finite(summary)
  assert guard.describe(summary, ["a", "b"], 40, 20, 40) == (
      "non-finite values in the weighting state, task weights after steps 41-60 (losses "
      "finite); stopped without saving, the last good checkpoint is step 40")
  summary.update(bad_step=np.int32(45), bad_tasks=np.array([False, True]))
  assert guard.describe(summary, ["a", "b"], 40, 20, None).startswith(
      "non-finite loss at step 45 in task(s) ['b'] and in the weighting state, task weights")


# ----------------------------------------------------------------------------------------------
# One finished run, shared by the tests of checkpoints, the lock and config changes.


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished small run's workdir and final metrics (made through `main` in this process)."""
  import jax  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from mtl_jax import main, sharding  # pylint: disable=import-outside-toplevel
  workdir = tmp_path_factory.mktemp("finished")
  argv = sys.argv
  defined = set(flags.FLAGS)
  make_mesh = sharding.make_mesh
  try:
    # conftest's one-device mesh, which the function-scoped tests get
    sharding.make_mesh = lambda devices=None: make_mesh(jax.devices()[:1])
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
      main._parse_flags(["mtl_jax.main", *SMALL, f"--workdir={workdir}"])  # pylint: disable=protected-access
      main.main(["mtl_jax.main"])
  finally:
    sharding.make_mesh = make_mesh
    sys.argv = argv
    for name in set(flags.FLAGS) - defined:
      delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
  return workdir, json.loads((workdir / "final_metrics.json").read_text())


def _copy(finished, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished[0], workdir)
  return workdir


def _data_file(step_dir):
  """The largest file of a checkpoint's state: the arrays."""
  files = [os.path.join(root, f) for root, _, names in os.walk(step_dir / "state")
           for f in names]
  return max(files, key=os.path.getsize)


def _flip_a_byte(step_dir):
  path = _data_file(step_dir)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))


def test_checkpoints_carry_checksums_that_catch_same_size_corruption(finished, tmp_path):
  step_dir = _copy(finished, tmp_path) / "checkpoints" / str(NUM_STEPS)
  assert checkpoint.verify(str(step_dir))
  size = os.path.getsize(_data_file(step_dir))
  _flip_a_byte(step_dir)
  assert os.path.getsize(_data_file(step_dir)) == size
  with pytest.raises(checkpoint.DamagedCheckpoint, match="1 file.* differ from their checksums"):
    checkpoint.verify(str(step_dir))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["same-size corruption", "truncated data file",
                                    "missing run metadata"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one_and_ends_the_same(
    run_main, caplog, finished, tmp_path, damage):
  workdir = _copy(finished, tmp_path)
  step_dir = workdir / "checkpoints" / str(NUM_STEPS)
  if damage == "same-size corruption":
    _flip_a_byte(step_dir)
  elif damage == "truncated data file":
    os.remove(step_dir / checkpoint.CHECKSUM_FILE)  # orbax alone must notice
    with open(_data_file(step_dir), "r+b") as f:
      f.truncate(3)
  else:
    shutil.rmtree(step_dir / "run")
  os.remove(workdir / "final_metrics.json")
  with caplog.at_level("WARNING", logger="absl"):
    assert run_main(*SMALL, f"--workdir={workdir}") == 0
  assert f"skipping the checkpoint of step {NUM_STEPS}" in caplog.text
  assert (workdir / checkpoint.SKIPPED_DIR / str(NUM_STEPS)).is_dir()
  assert json.loads((workdir / "final_metrics.json").read_text()) == finished[1]


def test_a_half_deleted_older_checkpoint_is_removed(run_main, caplog, finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  older = workdir / "checkpoints" / str(EVERY)
  os.remove(older / "_CHECKPOINT_METADATA")  # a deletion cut short
  shutil.rmtree(older / "state")
  with caplog.at_level("WARNING", logger="absl"):
    assert run_main(*SMALL, f"--workdir={workdir}") == 0  # finished: nothing to train
  assert f"removed the half-deleted checkpoint of step {EVERY}" in caplog.text
  assert not older.exists() and (workdir / "checkpoints" / str(NUM_STEPS)).is_dir()


# ----------------------------------------------------------------------------------------------
# One run per workdir.


def _dead_pid() -> int:
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def test_a_workdir_in_use_is_refused_and_a_dead_holders_lock_taken_over(run_main, capsys,
                                                                       finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  lock = workdir / workdir_lock.LOCK_FILE
  lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
  assert run_main(*SMALL, f"--workdir={workdir}") == 2
  assert f"{workdir} is in use by another run (process {os.getppid()} on " in (
      _one_error_line(capsys))
  lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
  assert run_main(*SMALL, f"--workdir={workdir}") == 0
  assert not lock.exists()  # released on exit


def test_the_lock_is_reentrant_within_a_process_and_released_by_its_last_holder(tmp_path):
  path = workdir_lock.acquire(str(tmp_path))
  assert workdir_lock.acquire(str(tmp_path)) == path
  workdir_lock.release(path)
  assert os.path.exists(path)
  workdir_lock.release(path)
  assert not os.path.exists(path)


def test_a_changed_config_is_refused_naming_the_change_unless_allowed(run_main, capsys,
                                                                      finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  assert run_main(*SMALL, f"--workdir={workdir}", "--config.optimizer.learning_rate=0.1") == 2
  line = _one_error_line(capsys)
  assert "holds checkpoints of a run with another config (config.optimizer.learning_rate: " \
         "0.002 -> 0.1)" in line and "--config.allow_config_change=True" in line
  assert run_main(*SMALL, f"--workdir={workdir}", f"--config.num_steps={NUM_STEPS}",
                  "--config.notes=changed notes are fine") == 0


def test_keys_the_library_added_or_removed_since_a_run_are_no_change():
  # A workdir of an older mtl_jax: its run.json lacks `new` (now with default 0) and keeps `old`.
  saved = {"lr": 0.1, "old": 1, "block": {"a": 1}}
  defaults = {"lr": 0.1, "new": 0, "block": {"a": 1, "b": []}}
  assert validate.config_changes(saved, {"lr": 0.1, "new": 0, "block": {"a": 1, "b": []}},
                                 defaults=defaults) == []
  assert validate.config_changes(saved, {"lr": 0.2, "new": 5, "block": {"a": 1, "b": [2]}},
                                 defaults=defaults) == [
      "config.block.b: [] -> [2]", "config.lr: 0.1 -> 0.2", "config.new: 0 -> 5"]
  assert validate.config_changes(saved, {"lr": 0.1}) == [  # without defaults: every key
      "config.block: {'a': 1} -> None", "config.old: 1 -> None"]


def test_a_finished_run_of_an_older_config_reruns_as_finished(run_main, capsys, finished,
                                                                tmp_path):
  workdir = _copy(finished, tmp_path)
  run = json.loads((workdir / "run.json").read_text())
  del run["config"]["dense_augment"], run["config"]["optimizer"]["staircase"]
  (workdir / "run.json").write_text(json.dumps(run))
  assert run_main(*SMALL, f"--workdir={workdir}") == 0
  assert "already finished at step" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# SIGTERM anywhere.


@pytest.fixture
def sigterm_safety_net(monkeypatch):
  """A SIGTERM that the run fails to handle is swallowed here, not the death of pytest."""
  signal.signal(signal.SIGTERM, lambda *_: None)
  yield
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  interrupt.reset()


def test_sigterm_during_start_up_exits_0_saying_nothing_was_saved(
    run_main, capsys, monkeypatch, tmp_path, sigterm_safety_net):
  from mtl_jax import train  # pylint: disable=import-outside-toplevel
  create = train.create_train_state

  def create_then_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return create(*args, **kwargs)

  monkeypatch.setattr(train, "create_train_state", create_then_sigterm)
  assert run_main(*SMALL, f"--workdir={tmp_path}") == 0
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      "mtl_jax: interrupted at step 0; before training step 1: nothing new to save, rerun to "
      "start")
  assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]


def test_sigterm_during_compilation_saves_the_first_dispatch_before_anything_is_logged(
    run_main, capsys, monkeypatch, tmp_path, sigterm_safety_net):
  # SIGTERM while the first dispatch compiles: its steps finish, are saved, and the run ends
  # with exit 0 although no scalar was logged yet for the curves.
  from mtl_jax import train  # pylint: disable=import-outside-toplevel
  make = train.make_train_fn

  def make_then_sigterm(*args, **kwargs):
    train_fn = make(*args, **kwargs)

    def sigterm_then_train(*fn_args):
      os.kill(os.getpid(), signal.SIGTERM)
      return train_fn(*fn_args)
    return sigterm_then_train

  monkeypatch.setattr(train, "make_train_fn", make_then_sigterm)
  assert run_main(*SMALL, "--config.log_every=40", "--config.eval_every=40",
                  f"--workdir={tmp_path}") == 0
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      f"mtl_jax: interrupted at step {EVERY}; checkpoint saved, rerun to resume")
  assert os.listdir(tmp_path / "checkpoints") == [str(EVERY)]
  assert not (tmp_path / "curves.png").exists()


def test_sigterm_during_the_final_evaluation_still_writes_final_metrics(
    run_main, caplog, monkeypatch, finished, tmp_path, sigterm_safety_net):
  from mtl_jax import train  # pylint: disable=import-outside-toplevel
  workdir = _copy(finished, tmp_path)
  os.remove(workdir / "final_metrics.json")
  evaluate = train.evaluate

  def evaluate_with_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return evaluate(*args, **kwargs)

  monkeypatch.setattr(train, "evaluate", evaluate_with_sigterm)
  with caplog.at_level("WARNING", logger="absl"):
    assert run_main(*SMALL, f"--workdir={workdir}") == 0
  assert "SIGTERM arrived during the final evaluation, which finished" in caplog.text
  assert json.loads((workdir / "final_metrics.json").read_text()) == finished[1]


# ----------------------------------------------------------------------------------------------
# Processes of a multi-process run: one line naming a process that never starts or dies.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_a_process_that_never_starts_is_named_after_the_timeout():
  from mtl_jax import peers  # pylint: disable=import-outside-toplevel
  address = f"localhost:{_free_port()}"
  with pytest.raises(peers.PeersMissing, match=r"process\(es\) 1, 2 of 3 did not start within "
                                               r"--coordinator_timeout=0.3 s"):
    peers.roll_call(address, 3, 0, timeout_s=0.3)
  with pytest.raises(peers.PeersMissing, match="process 2: process 0 could not be reached"):
    peers.roll_call(address, 3, 2, timeout_s=0.3)


def test_a_process_that_dies_is_named_by_the_others_and_a_goodbye_is_not_a_death(
    monkeypatch, capsys):
  import threading  # pylint: disable=import-outside-toplevel
  from mtl_jax import peers  # pylint: disable=import-outside-toplevel
  exits = []

  monkeypatch.setattr(peers.os, "_exit", exits.append)  # the watcher's thread, not pytest, ends
  for ending in ("goodbye", "death"):
    address, watches = f"localhost:{_free_port()}", {}
    lead = threading.Thread(target=lambda: watches.update(
        lead=peers.roll_call(address, 2, 0, timeout_s=20)))
    lead.start()
    other = peers.roll_call(address, 2, 1, timeout_s=20)
    lead.join()
    if ending == "goodbye":
      other.close()
    else:
      other._closing = True  # pylint: disable=protected-access
      other._peers[0].close()  # pylint: disable=protected-access  (as a killed process's do)
    watches["lead"]._thread.join(timeout=5)  # pylint: disable=protected-access
    watches["lead"].close()
    assert exits == ([] if ending == "goodbye" else [1])
  assert capsys.readouterr().err.strip() == (
      "mtl_jax: error: process 1 of the run stopped without finishing; process 0 stops too "
      "(see process 1's output)")


@pytest.mark.slow
def test_the_command_line_names_a_process_that_never_starts_in_one_line(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  result = subprocess.run(
      [sys.executable, "-m", "mtl_jax.main", DIGITS, f"--workdir={tmp_path / 'run'}",
       f"--coordinator_address=localhost:{_free_port()}", "--num_processes=2",
       "--process_id=0", "--coordinator_timeout=1"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1
  assert result.stderr.strip() == ("mtl_jax: error: multi-process start-up: process(es) 1 of 2 "
                                   "did not start within --coordinator_timeout=1 s")
  assert not (tmp_path / "run").exists()
