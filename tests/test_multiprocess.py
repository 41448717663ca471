"""Data-parallel training across processes: 2 processes x 2 devices against 1 process x 4.

Both runs train on the same global batches (the data order is a function of (seed, step)) over
a 4-device mesh, so they must end with the same metrics. They differ only in how gradients and
metric sums are reduced (gloo across processes, in-process otherwise), which changes float32
rounding: the metrics agree to about 1e-7 relative, not bit for bit. The 2 processes are the
command line (`python -m mtl_jax.main`, as tests/cli_with_test_models.py runs it with the test
models registered); the 1 process of 4 is this test's own, on 4 of its 8 devices, while they
run. The model is a user's cross-stitch network trained by MGDA: no encode/decode, so the
per-task gradients take the generic path, the one with most to reduce across processes.
"""

import glob
import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import pytest

import mtl_jax as mj
from mtl_jax import models, sharding

import cli_with_test_models

REPO = pathlib.Path(__file__).resolve().parents[1]
# configs/digits.py with these overrides: a short run of a small model, for the claim is about
# how steps and metrics are reduced, not about size.
OVERRIDES = {"num_steps": 20, "log_every": 10, "eval_every": 10, "checkpoint_every": 10,
             "steps_per_dispatch": 10, "model.name": "two_column_stitch", "tasks": "digit,parity",
             "weighting": "mgda"}
FLAGS = ("--config=configs/digits.py", *(f"--config.{k}={v}" for k, v in OVERRIDES.items()))
TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(workdir: pathlib.Path, log: pathlib.Path, devices: int,
            *flags: str) -> subprocess.Popen:
  """The command line on `devices` simulated CPU devices, output to `log`."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the tests' cache: no program here repeats
  with open(log, "w", encoding="utf-8") as out:
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "cli_with_test_models.py"), *FLAGS,
         f"--workdir={workdir}", *flags],
        cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_all(procs: dict[str, tuple[subprocess.Popen, pathlib.Path]]) -> None:
  """Waits for every process; kills the rest on a timeout; fails showing the failed logs."""
  try:
    for proc, _ in procs.values():
      proc.wait(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    for proc, _ in procs.values():
      proc.kill()
      proc.wait()
  failed = {name: (proc.returncode, log.read_text()[-3000:])
            for name, (proc, log) in procs.items() if proc.returncode != 0}
  assert not failed, "\n\n".join(f"{name} exited {rc}:\n{tail}"
                                 for name, (rc, tail) in failed.items())


def _config():
  """The config the command line builds from FLAGS."""
  spec = importlib.util.spec_from_file_location("digits_config", REPO / "configs" / "digits.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in OVERRIDES.items():
    *parents, name = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = tuple(value.split(",")) if key == "tasks" else value
  return config


@pytest.mark.slow
@pytest.mark.sharded
def test_two_processes_of_two_devices_match_one_process_of_four(tmp_path):
  multi = tmp_path / "2x2"
  distributed = (f"--coordinator_address=localhost:{_free_port()}", "--num_processes=2")
  logs = {"process 0 of 2": tmp_path / "2x2.0.log", "process 1 of 2": tmp_path / "2x2.1.log"}
  procs = {name: (_launch(multi, log, 2, *distributed, f"--process_id={i}"), log)
           for i, (name, log) in enumerate(logs.items())}
  models.REGISTRY["two_column_stitch"] = cli_with_test_models.two_column_stitch
  try:
    want = mj.train_and_evaluate(_config(), str(tmp_path / "1x4"),
                                 mesh=sharding.make_mesh(jax.devices()[:4]))
  finally:
    del models.REGISTRY["two_column_stitch"]
    _wait_all(procs)

  got = json.loads((multi / "final_metrics.json").read_text())
  assert sorted(got) == sorted(want)
  assert any(k.startswith("test/") for k in want)
  assert got == pytest.approx(want, rel=1e-6)  # observed: at most 1.2e-7
  # Only process 0 writes metrics: one TensorBoard file, and the table; process 1 shows only
  # its progress, in plain lines that say whose they are.
  assert len(glob.glob(str(multi / "events.out.tfevents.*"))) == 1
  process_1 = logs["process 1 of 2"].read_text()
  assert "process 1/2: step 20/20" in process_1 and "task " not in process_1
  # Both processes wrote each checkpoint together through orbax.
  assert sorted(os.listdir(multi / "checkpoints")) == ["10", "20"]
