"""Shared test setup: 8 simulated CPU devices, the `slow` marker, small configs."""

import os

# Before JAX is imported anywhere: tests shard over 8 simulated devices.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=wrong-import-position


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: end-to-end runs of a few seconds to a minute (CI runs them too)")


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
