"""cpu_tuning: the XLA flag and glibc's allocator settings, set by `apply()` (never by importing
mtl_jax), on by default on CPU, off on request."""

import os
import subprocess
import sys

import pytest

from mtl_jax import cpu_tuning

FLAG = cpu_tuning.YNN_SETTING


def run_python(code: str, **env) -> str:
  """stdout of `python -c code` in a fresh process with `env` added to this environment."""
  environ = {**os.environ, **env}
  done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                        text=True, timeout=120, check=True)
  return done.stdout.strip()


def test_flag_is_appended_to_the_users_flags():
  assert cpu_tuning.with_ynn_flag("") == FLAG
  assert cpu_tuning.with_ynn_flag("--xla_force_host_platform_device_count=8") == (
      "--xla_force_host_platform_device_count=8 " + FLAG)


def test_users_own_setting_of_the_flag_is_kept():
  own = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution --foo=1"
  assert cpu_tuning.with_ynn_flag(own) == own
  assert cpu_tuning.with_ynn_flag(cpu_tuning.with_ynn_flag("")) == FLAG


@pytest.mark.parametrize("value, on", [(None, True), ("1", True), ("0", False),
                                       ("false", False), ("OFF", False), ("no", False)])
def test_environment_variable_turns_it_off(value, on):
  environ = {} if value is None else {cpu_tuning.ENV_VAR: value}
  assert cpu_tuning.enabled(environ) is on


def test_only_jaxlib_versions_known_to_accept_the_flag_get_it():
  assert cpu_tuning.flag_known("0.10.2")
  assert cpu_tuning.flag_known("0.10.3.dev20260101")
  assert cpu_tuning.parse_version("0.10.2rc1") == (0, 10, 2)
  assert not cpu_tuning.flag_known("0.6.0")  # XLA would abort on an unknown flag
  assert not cpu_tuning.flag_known("0.11.0")
  assert not cpu_tuning.flag_known(None)


def test_only_the_cpu_backend_is_tuned():
  assert cpu_tuning.on_cpu({}, accelerator=False)
  assert not cpu_tuning.on_cpu({}, accelerator=True)
  assert cpu_tuning.on_cpu({"JAX_PLATFORMS": "cpu"}, accelerator=True)
  assert not cpu_tuning.on_cpu({"JAX_PLATFORMS": "cuda,cpu"}, accelerator=True)


def test_apply_writes_only_the_given_environment(monkeypatch):
  monkeypatch.setattr(cpu_tuning, "jaxlib_version", lambda: "0.10.2")  # accepts the flag
  monkeypatch.setattr(cpu_tuning, "accelerator_installed", lambda: False)
  malloc_calls = []
  monkeypatch.setattr(cpu_tuning, "tune_malloc", lambda: malloc_calls.append(1) or True)
  before = dict(os.environ)
  environ = {"XLA_FLAGS": "--a=1"}
  assert cpu_tuning.apply(environ) == (True, True)
  assert environ == {"XLA_FLAGS": "--a=1 " + FLAG}
  assert cpu_tuning.apply(environ) == (True, True)  # idempotent: the flag once
  assert environ == {"XLA_FLAGS": "--a=1 " + FLAG}
  assert dict(os.environ) == before
  off = {cpu_tuning.ENV_VAR: "0", "XLA_FLAGS": ""}
  assert cpu_tuning.apply(off) == (False, False)
  assert off == {cpu_tuning.ENV_VAR: "0", "XLA_FLAGS": ""}
  assert cpu_tuning.apply({"JAX_PLATFORMS": "cuda"}) == (False, False)
  assert len(malloc_calls) == 2


# Where a 96 MiB buffer lives, allocated in this thread: glibc maps it with its own mmap
# ("anonymous") unless the allocator is tuned ("[heap]").
_WHERE_FN = """
import numpy as np

def where(out):
  buffer = np.ones(3 << 23, np.float32)
  address = buffer.ctypes.data
  for line in open("/proc/self/maps"):
    span, *rest = line.split()
    lo, hi = (int(v, 16) for v in span.split("-"))
    if lo <= address < hi:
      out.append(rest[-1] if len(rest) == 5 else "anonymous")
"""

# The third-party imports first: jax itself sets TF_CPP_MIN_LOG_LEVEL (and more) at import.
_IMPORT = _WHERE_FN + """
import json, os
import jax, flax, optax, orbax.checkpoint, grain, clu.metrics
before = dict(os.environ)
import mtl_jax
after = dict(os.environ)
print(json.dumps({k: after.get(k) for k in set(before) | set(after) if before.get(k) != after.get(k)}))
found = []
where(found)
print(" ".join(found))
mtl_jax.cpu_tuning.apply()  # the documented call: still in time, JAX has not started
print(os.environ["XLA_FLAGS"])
print(jax.device_count())
"""

_GLIBC = sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))


def test_importing_mtl_jax_sets_nothing_and_apply_after_it_still_works():
  flags = "--xla_force_host_platform_device_count=3"
  out = run_python(_IMPORT, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", **{cpu_tuning.ENV_VAR: "1"})
  changed, buffer, xla_flags, devices = out.splitlines()
  assert changed == "{}"  # no XLA flag, no environment variable at all
  if _GLIBC:
    assert buffer == "anonymous"  # no mallopt either
  known = cpu_tuning.flag_known(cpu_tuning.jaxlib_version())
  assert xla_flags == (f"{flags} {FLAG}" if known else flags)
  assert devices == "3"  # XLA started with the user's flags and accepted ours


# The buffer allocated in the main thread and in a new thread (as XLA's threads allocate a
# step's buffers), after `apply()`.
_WHERE = _WHERE_FN + """
import threading
import mtl_jax.cpu_tuning as t

t.apply()
found = []
where(found)
thread = threading.Thread(target=where, args=(found,))
thread.start()
thread.join()
print(" ".join(found))
"""


@pytest.mark.skipif(not _GLIBC, reason="glibc only")
def test_large_buffers_of_every_thread_come_from_the_heap_not_from_mmap():
  assert run_python(_WHERE, JAX_PLATFORMS="cpu", **{cpu_tuning.ENV_VAR: "1"}) == "[heap] [heap]"
  assert run_python(_WHERE, **{cpu_tuning.ENV_VAR: "0"}) == "anonymous anonymous"
