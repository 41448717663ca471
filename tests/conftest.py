"""Shared test setup: 8 simulated CPU devices, one by default, -O0, a compilation cache, markers.

- 8 simulated CPU devices exist, but `mtl_jax.sharding.make_mesh()` (the default mesh of
  `train_and_evaluate`, the trainer and the data pipelines) spans one of them unless a test is
  marked `@pytest.mark.sharded`: an 8-way partitioned program costs several times the compile
  and run time of an unsplit one on 2 cores, for tests that are not about sharding. Tests of
  sharding say so with the marker, or pass their own devices (`make_mesh(jax.devices())`).
- JAX's persistent compilation cache, in a fresh directory per test session (so every session
  starts cold, as a fresh clone does): a program compiled twice, in two tests, two xdist
  workers, or the `python -m mtl_jax.main` subprocesses of a test (they inherit the
  environment), is compiled once and loaded the second time. A cached executable is the one
  XLA compiled, so no result changes; `JAX_COMPILATION_CACHE_DIR` set by the user is kept.
- The slowest tests are collected first, so that `-n 2` does not end waiting on one of them.
"""

import atexit
import os
import shutil
import tempfile

# Before JAX is imported anywhere: 8 simulated devices for the tests of sharding, and LLVM at
# -O0 without its expensive passes: the suite's programs are small and compiled once, so
# compiling dominates, and this takes a quarter off the suite (5 min 37 s -> 4 min 8 s on 2
# cores, 2026-11-30). The few tests written against the backend's default float32 rounding ask
# for it per jit (compile_options.FULL_OPTIMIZATION). XLA:CPU's older elemental emitter for
# fusions compiles in about 60% of the CPU time of its MLIR fusion emitters (the suite: 384 against
# 578 CPU-seconds, 2026-11-30), for the same results to test tolerance. Subprocesses inherit the
# flags.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8"
                           + " --xla_backend_optimization_level=0"
                           + " --xla_llvm_disable_expensive_passes=true"
                           + " --xla_cpu_use_fusion_emitters=false").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the first process of the session (xdist's
  # controller, or pytest without -n) makes the directory, and removes it when it exits; workers
  # and subprocesses inherit it.
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir = tempfile.mkdtemp(prefix="mtl_jax_jit_")
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
  # Programs that compile in over 0.1 s (the default, 1 s, would leave most of ours out).
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

import pytest  # pylint: disable=wrong-import-position

# Tests of over ~3 s (measured on 2 cores), started first. A renamed test only loses its place.
_SLOW_FIRST = (
    "test_multiprocess.py::",
    "test_resume.py::",
    "test_user_models.py::test_forty_binary_attributes_with_missing_cells",
    "test_gradients.py::test_each_tasks_row_of_j_is_the_jacobian_of_its_loss",
    "test_trainer.py::test_the_shapes_config_trains_from_the_command_line",
    "test_trainer.py::test_rerunning_fit_on_the_same_logdir_resumes_with_the_same_batches",
    "test_trainer.py::test_fit_evaluate_predict_save_and_load_round_trip",
    "test_user_models.py::test_the_trainer_takes_a_whole_user_model",
    "test_user_models.py::test_the_trainer_takes_user_heads_on_a_registered_architecture",
    "test_arch_ltb.py::test_a_stopped_run",
    "test_nyuv2.py::test_dense_shapes_trains_end_to_end_from_the_command_line",
)


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: end-to-end runs of a few seconds to a minute (CI runs them too)")
  config.addinivalue_line(
      "markers", "sharded: the default mesh (sharding.make_mesh()) spans all 8 simulated "
      "devices, not one: for tests of sharding")


def pytest_collection_modifyitems(items):
  """Moves the slowest tests to the front (stable: every xdist worker gets the same order)."""
  rank = lambda item: next((i for i, prefix in enumerate(_SLOW_FIRST)
                            if item.nodeid.split("/")[-1].startswith(prefix)), len(_SLOW_FIRST))
  items.sort(key=rank)


@pytest.fixture(autouse=True)
def _one_device_mesh_by_default(request, monkeypatch):
  """`sharding.make_mesh()` without devices spans one device, unless the test is `sharded`."""
  if request.node.get_closest_marker("sharded"):
    return
  import jax  # pylint: disable=import-outside-toplevel
  from mtl_jax import sharding  # pylint: disable=import-outside-toplevel
  make_mesh = sharding.make_mesh
  monkeypatch.setattr(sharding, "make_mesh", lambda devices=None: make_mesh(
      jax.devices()[:1] if devices is None else devices))


@pytest.fixture
def tiny_config():
  """A digits run small enough for a unit test: a few hundred fast steps."""
  from mtl_jax.config import default_config  # pylint: disable=import-outside-toplevel
  config = default_config()
  config.model.shared_layers = (32,)
  config.model.task_layers = (16,)
  config.num_steps = 200
  config.steps_per_dispatch = 25
  config.log_every = config.eval_every = config.checkpoint_every = 100
  return config


@pytest.fixture
def one_device():
  """A mesh over one device: unit tests that do not test sharding run unsplit (faster)."""
  import jax  # pylint: disable=import-outside-toplevel
  from mtl_jax import sharding  # pylint: disable=import-outside-toplevel
  return sharding.make_mesh(jax.devices()[:1])


@pytest.fixture
def run_main(monkeypatch):
  """`python -m mtl_jax.main *args` in this process: its exit code (0 when main returns).

  For tests of what the command line refuses (one line, exit 2), without a subprocess's
  start-up. absl's flags are global: the override flags a parse defines are deleted after it,
  and every flag is unparsed.
  """
  import warnings  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from mtl_jax import main  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(sys, "argv", list(sys.argv))  # main._parse_flags rewrites sys.argv
  monkeypatch.setattr(main.logging, "set_verbosity", lambda level: None)
  for prefix in main._FREE_FORM_PREFIXES:  # pylint: disable=protected-access
    monkeypatch.setitem(main._FREE_FORM_PREFIXES, prefix, {})  # pylint: disable=protected-access

  def run(*args) -> int:
    defined = set(flags.FLAGS)
    try:
      with warnings.catch_warnings():  # ml_collections loads the config file with load_module
        warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
        main._parse_flags(["mtl_jax.main", *args])  # pylint: disable=protected-access
        main.main(["mtl_jax.main"])
      return 0
    except SystemExit as e:
      return e.code
    finally:
      for name in set(flags.FLAGS) - defined:
        delattr(flags.FLAGS, name)
      flags.FLAGS.unparse_flags()

  return run
