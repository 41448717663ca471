"""Kill and resume from the command line: SIGKILL or SIGTERM mid-run, rerun, same final metrics.

The suite's two end-to-end resume tests (each weighting method's state is checked at the state
level in test_train.py), and the rerun of a finished run. The signal comes from inside the run,
at a chosen moment: the command runs `mtl_jax.main` as `python -m` does, with
`Checkpointer.save` wrapped to signal its own process once it has started writing one
checkpoint. So the moment is exact and the runs can be short, where a signal from outside had to
hit a run slowed down on purpose.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS, CHECKPOINT_EVERY = 120, 40
# A weighting method with state and missing labels, so that both travel through the checkpoint.
ARGS = ["--config=configs/digits.py:missing=0.4", f"--config.num_steps={NUM_STEPS}",
        "--config.weighting=uncertainty", "--config.model.shared_layers=(32,)",
        "--config.model.task_layers=(16,)", f"--config.checkpoint_every={CHECKPOINT_EVERY}",
        "--config.eval_every=60", "--config.log_every=20", "--config.steps_per_dispatch=20"]

# `python -m mtl_jax.main` whose Checkpointer sends `signum` to its own process right after
# `save(step)` returns, while orbax may still be writing that step in the background.
_SIGNALLED_MAIN = """
import os, runpy, sys
from mtl_jax import checkpoint
signum, at_step = int(sys.argv.pop(1)), int(sys.argv.pop(1))
save = checkpoint.Checkpointer.save

def save_then_signal(self, step, state, run):
  save(self, step, state, run)
  if step == at_step:
    os.kill(os.getpid(), signum)

checkpoint.Checkpointer.save = save_then_signal
sys.argv[0] = "mtl_jax.main"
runpy.run_module("mtl_jax.main", run_name="__main__", alter_sys=True)
"""


def _env():
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _main(workdir, *extra):
  """`python -m mtl_jax.main` on `workdir`, which must succeed; (final metrics, its output)."""
  result = subprocess.run([sys.executable, "-m", "mtl_jax.main", *ARGS, f"--workdir={workdir}",
                           *extra], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return (json.loads((workdir / "final_metrics.json").read_text()),
          result.stdout + result.stderr)


def _signalled_main(workdir, signum, at_step):
  """The same command, signalled by itself once it is saving step `at_step`."""
  result = subprocess.run([sys.executable, "-c", _SIGNALLED_MAIN, str(int(signum)), str(at_step),
                           *ARGS, f"--workdir={workdir}"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300, check=False)
  return result.returncode, result.stderr


def _saved_steps(workdir):
  directory = workdir / "checkpoints"
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if directory.exists() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The final metrics of the run without a signal."""
  return _main(tmp_path_factory.mktemp("uninterrupted"))[0]


@pytest.mark.slow
def test_sigkill_while_a_checkpoint_is_written_then_rerun_gives_identical_final_metrics(
    tmp_path, uninterrupted):
  returncode, stderr = _signalled_main(tmp_path, signal.SIGKILL, at_step=2 * CHECKPOINT_EVERY)
  assert returncode == -signal.SIGKILL, stderr[-2000:]
  assert not (tmp_path / "final_metrics.json").exists()
  saved = _saved_steps(tmp_path)  # the step being written when killed may be missing
  assert saved and max(saved) <= 2 * CHECKPOINT_EVERY
  final, output = _main(tmp_path)
  assert f"resuming from step {max(saved)} of {NUM_STEPS}" in output  # not from scratch
  assert final == uninterrupted


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_0_and_resumes_exactly(tmp_path, uninterrupted):
  returncode, stderr = _signalled_main(tmp_path, signal.SIGTERM, at_step=CHECKPOINT_EVERY)
  assert returncode == 0, stderr[-2000:]
  assert "interrupted at step" in stderr
  stopped_at = int(stderr.split("interrupted at step")[1].split(";")[0])
  # SIGTERM during the save of step 40 stops the run at the end of the next dispatch (step 60),
  # which checkpoints there, off the checkpoint_every grid.
  assert CHECKPOINT_EVERY < stopped_at < 2 * CHECKPOINT_EVERY
  assert max(_saved_steps(tmp_path)) == stopped_at
  assert not (tmp_path / "final_metrics.json").exists()
  final, output = _main(tmp_path)
  assert f"resuming from step {stopped_at} of {NUM_STEPS}" in output  # not from scratch
  assert final == uninterrupted


def test_rerunning_a_finished_run_says_so_and_writes_nothing(tmp_path, tiny_config, one_device,
                                                              capsys):
  import mtl_jax as mj  # pylint: disable=import-outside-toplevel
  final = mj.train_and_evaluate(tiny_config, str(tmp_path), mesh=one_device)
  files = lambda: {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
  written = files()
  capsys.readouterr()
  assert mj.train_and_evaluate(tiny_config, str(tmp_path), mesh=one_device) == final
  assert capsys.readouterr().out.splitlines()[-1] == (
      f"already finished at step 200; results in {tmp_path}")
  assert files() == written  # no new events file, checkpoint or metrics
  assert _saved_steps(tmp_path) == [100, 200]
