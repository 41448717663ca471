"""Kill and resume from the command line: SIGKILL or SIGTERM mid-run, rerun, same final metrics."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Wide layers slow the steps down enough (~1,000 steps in several seconds) to stop a run midway.
ARGS = ["--config=configs/digits.py", "--config.num_steps=1000",
        "--config.model.shared_layers=(512,512)", "--config.checkpoint_every=100",
        "--config.eval_every=250", "--config.log_every=100", "--config.steps_per_dispatch=20"]


def _command(workdir):
  return [sys.executable, "-m", "mtl_jax.main", *ARGS, f"--workdir={workdir}"]


def _env():
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _run(workdir):
  result = subprocess.run(_command(workdir), cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return json.loads((workdir / "final_metrics.json").read_text())


def _saved_steps(workdir):
  directory = workdir / "checkpoints"
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if directory.exists() else []


def _start_and_signal(workdir, signum, after_step=200):
  """Starts a run and sends `signum` once the checkpoint of `after_step` is complete."""
  process = subprocess.Popen(_command(workdir), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  while not any(s >= after_step for s in _saved_steps(workdir)):
    assert process.poll() is None, process.communicate()[1][-2000:]
    assert time.monotonic() < deadline
    time.sleep(0.005)
  process.send_signal(signum)
  _, stderr = process.communicate(timeout=120)
  return process.returncode, stderr


@pytest.fixture(scope="module")
def uninterrupted_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  _run(workdir)
  return workdir


@pytest.fixture
def uninterrupted(uninterrupted_workdir):
  return json.loads((uninterrupted_workdir / "final_metrics.json").read_text())


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_final_metrics(tmp_path, uninterrupted):
  returncode, _ = _start_and_signal(tmp_path, signal.SIGKILL)
  assert returncode == -signal.SIGKILL
  assert not (tmp_path / "final_metrics.json").exists(), "the run ended before the kill"
  assert max(_saved_steps(tmp_path)) < 1000
  assert _run(tmp_path) == uninterrupted


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_0_and_resumes_exactly(tmp_path, uninterrupted):
  returncode, stderr = _start_and_signal(tmp_path, signal.SIGTERM)
  assert returncode == 0, stderr[-2000:]
  assert "interrupted at step" in stderr
  stopped_at = int(stderr.split("interrupted at step")[1].split(";")[0])
  assert stopped_at in _saved_steps(tmp_path) and stopped_at < 1000
  assert not (tmp_path / "final_metrics.json").exists()
  assert _run(tmp_path) == uninterrupted


@pytest.mark.slow
def test_rerunning_a_finished_run_changes_nothing(uninterrupted_workdir, uninterrupted):
  assert _run(uninterrupted_workdir) == uninterrupted
