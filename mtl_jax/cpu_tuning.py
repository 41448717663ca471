"""CPU tuning for the process that trains: an XLA flag and glibc's allocator settings.

Importing `mtl_jax` sets nothing; `apply()` does. The entry points that own their process call
it: `python -m mtl_jax.main` and the training and benchmark scripts in `experiments/`. In a
notebook or your own script, call it before the first JAX computation (XLA reads its flags once,
when JAX starts its backend):

    import mtl_jax.cpu_tuning as t
    t.apply()

Two process-wide settings make convolutional training on CPU faster (figures in
`experiments/bench_step.py`):

- **The Eigen convolution path.** jaxlib 0.10 sends CPU convolutions through YNNPACK, about 2x
  slower than the Eigen path on the small convnets here, in both directions.
  `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` is appended to `XLA_FLAGS`,
  which XLA reads once, when JAX starts its CPU backend: `apply()` before the first JAX
  computation. A user's own setting of that flag is kept, and the flag is only added for the
  jaxlib versions known to accept it (`YNN_FLAG_JAXLIB`): XLA aborts on flags it does not know.
- **No page faults on every step.** glibc hands buffers of 32 MiB and more back to the OS on
  `free` and faults them in again, page by page, on the next step. `mallopt(M_MMAP_MAX, 0)` and
  `mallopt(M_TRIM_THRESHOLD, 1 GiB)` keep freed memory in the process for reuse, and
  `mallopt(M_ARENA_MAX, 1)` makes every thread allocate from the main heap: a thread's own
  arena holds at most 64 MiB per heap and maps anything larger with `mmap` whatever
  `M_MMAP_MAX` says, which is where XLA's threads put each step's 75-150 MiB buffers (Linux
  with glibc only). The cost: memory a run has freed stays counted in its resident size, and
  threads share one allocator lock.

Both apply only on CPU: when `JAX_PLATFORMS` names another platform first, or when an
accelerator plugin (`jax_plugins.*`, `libtpu`) is installed and `JAX_PLATFORMS` does not ask
for the CPU, nothing is set. `MTL_JAX_CPU_TUNING=0` (or `false`, `off`, `no`) turns both off.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pkgutil
import re
import sys
from typing import Mapping, MutableMapping, NamedTuple

ENV_VAR = "MTL_JAX_CPU_TUNING"
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_SETTING = YNN_FLAG + "=-individual_convolution"
YNN_FLAG_JAXLIB = ((0, 10, 2), (0, 11, 0))  # [first, end) of the jaxlib versions checked
M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD_BYTES = 1 << 30
_OFF = ("0", "false", "off", "no")


class Applied(NamedTuple):
  """What `apply` did: `xla_flag`, XLA_FLAGS sets the YNNPACK flag (ours, or the user's own
  setting kept); `malloc`, glibc took the allocator settings."""
  xla_flag: bool
  malloc: bool


def enabled(environ: Mapping[str, str]) -> bool:
  """Whether `MTL_JAX_CPU_TUNING` leaves the tuning on (it is on unless set to 0/false/off/no)."""
  return environ.get(ENV_VAR, "1").strip().lower() not in _OFF


def with_ynn_flag(xla_flags: str) -> str:
  """`xla_flags` with the Eigen-convolution flag appended, unless it already sets that flag."""
  if any(f == YNN_FLAG or f.startswith(YNN_FLAG + "=") for f in xla_flags.split()):
    return xla_flags
  return f"{xla_flags} {YNN_SETTING}".strip()


def parse_version(version: str) -> tuple[int, ...]:
  """(0, 10, 2) from "0.10.2" (or "0.10.2.dev20250101", "0.10.2rc1")."""
  leading = (re.match(r"\d*", part).group() for part in version.split(".")[:3])
  return tuple(int(digits or 0) for digits in leading)


def flag_known(version: str | None) -> bool:
  """Whether this jaxlib version is one that accepts the flag (`YNN_FLAG_JAXLIB`)."""
  if version is None:
    return False
  first, end = YNN_FLAG_JAXLIB
  return first <= parse_version(version) < end


def jaxlib_version() -> str | None:
  """The installed jaxlib's version (importing jaxlib reads no XLA flags), or None."""
  try:
    from jaxlib import version  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return version.__version__


def accelerator_installed() -> bool:
  """Whether a JAX accelerator plugin (CUDA, ROCm, ...) or libtpu is importable."""
  spec = importlib.util.find_spec("jax_plugins")
  if spec is not None and spec.submodule_search_locations:
    if any(True for _ in pkgutil.iter_modules(spec.submodule_search_locations)):
      return True
  return importlib.util.find_spec("libtpu") is not None


def on_cpu(environ: Mapping[str, str], accelerator: bool) -> bool:
  """Whether JAX will run on its CPU backend: `JAX_PLATFORMS` names "cpu" first, or it is
  unset and no accelerator is installed."""
  platforms = environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  return not accelerator


def tune_malloc() -> bool:
  """Sets glibc's M_MMAP_MAX to 0, M_TRIM_THRESHOLD to 1 GiB and M_ARENA_MAX to 1 (for
  threads started later); False where not glibc."""
  if not sys.platform.startswith("linux"):
    return False
  try:
    if not os.confstr("CS_GNU_LIBC_VERSION"):
      return False
    libc = ctypes.CDLL(None)
    mallopt = libc.mallopt
  except (AttributeError, OSError, ValueError):  # musl, no confstr, no symbol
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (M_ARENA_MAX, 1))
  return all([mallopt(param, value) == 1 for param, value in settings])  # 1: success


def apply(environ: MutableMapping[str, str] | None = None) -> Applied:
  """Applies the tuning of the module docstring to this process (idempotent).

  Args:
    environ: the environment to read and to write `XLA_FLAGS` to (default: `os.environ`).

  Returns:
    What was set.
  """
  environ = os.environ if environ is None else environ
  if not enabled(environ) or not on_cpu(environ, accelerator_installed()):
    return Applied(False, False)
  xla_flag = flag_known(jaxlib_version())
  if xla_flag:
    environ["XLA_FLAGS"] = with_ynn_flag(environ.get("XLA_FLAGS", ""))
  return Applied(xla_flag, tune_malloc())
