"""cpu_tuning: the XLA flag and glibc's allocator settings, on by default on CPU, off on request."""

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


def test_apply_writes_only_the_given_environment():
  environ = {"XLA_FLAGS": "--a=1", "JAX_PLATFORMS": "cpu"}
  applied = cpu_tuning.apply(environ)
  assert environ["XLA_FLAGS"] == ("--a=1 " + FLAG if applied.xla_flag else "--a=1")
  assert cpu_tuning.apply({cpu_tuning.ENV_VAR: "0", "XLA_FLAGS": ""}) == (False, False)


@pytest.mark.skipif(not cpu_tuning.flag_known(cpu_tuning.jaxlib_version()),
                    reason="this jaxlib is not known to accept the flag")
def test_import_appends_the_flag_to_xla_flags_before_jax_starts():
  code = "import os, mtl_jax, jax; print(os.environ['XLA_FLAGS']); print(jax.device_count())"
  out = run_python(code, XLA_FLAGS="--xla_force_host_platform_device_count=3",
                   JAX_PLATFORMS="cpu", **{cpu_tuning.ENV_VAR: "1"})
  assert out.splitlines() == ["--xla_force_host_platform_device_count=3 " + FLAG, "3"]


def test_import_with_tuning_off_leaves_xla_flags_alone():
  code = "import os, mtl_jax; print(os.environ.get('XLA_FLAGS', '<unset>'))"
  assert run_python(code, XLA_FLAGS="--xla_force_host_platform_device_count=3",
                    **{cpu_tuning.ENV_VAR: "0"}) == "--xla_force_host_platform_device_count=3"


# Where a 96 MiB buffer lives, allocated in the main thread and in a new thread (as XLA's
# threads allocate a step's buffers): glibc maps each with its own mmap unless tuned.
_WHERE = """
import threading
import numpy as np, mtl_jax

def where(out):
  buffer = np.ones(3 << 23, np.float32)
  address = buffer.ctypes.data
  for line in open("/proc/self/maps"):
    span, *rest = line.split()
    lo, hi = (int(v, 16) for v in span.split("-"))
    if lo <= address < hi:
      out.append(rest[-1] if len(rest) == 5 else "anonymous")

found = []
where(found)
thread = threading.Thread(target=where, args=(found,))
thread.start()
thread.join()
print(" ".join(found))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="glibc only")
def test_large_buffers_of_every_thread_come_from_the_heap_not_from_mmap():
  assert run_python(_WHERE, JAX_PLATFORMS="cpu", **{cpu_tuning.ENV_VAR: "1"}) == "[heap] [heap]"
  assert run_python(_WHERE, **{cpu_tuning.ENV_VAR: "0"}) == "anonymous anonymous"
