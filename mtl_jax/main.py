r"""Command-line entry point.

    python -m mtl_jax.main --config=configs/digits.py --workdir=/tmp/digits \
        --config.optimizer.learning_rate=3e-3
    python -m mtl_jax.main --config=configs/shapes.py --workdir=/tmp/shapes   # image files
    mtl-jax --config=digits:runlocal --workdir=/tmp/d   # installed: a packaged config by name

Rerunning the same command on the same --workdir resumes from its latest checkpoint; with a
changed config it refuses, naming the changes, unless `--config.allow_config_change=True`. A
configuration or input mistake prints one line naming it and exits with code 2, before any
file is written (and before data loading where the data is not needed to see it); so does a
second run on a workdir in use, before compiling. SIGTERM at any moment once the package is
imported (the first seconds) stops the run at the next safe point and exits 0, saying what was
saved. The command
applies the CPU tuning (`mtl_jax.cpu_tuning.apply`; `MTL_JAX_CPU_TUNING=0` turns it off).

Multi-process: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on each
process; PORT+1 must be free too (`mtl_jax.peers`' roll call). `--coordinator_timeout`
(seconds, default 300) bounds the wait for every process to start, after which each stops with
one line naming the processes missing; a process that dies mid-run stops the others with one
line naming it.
"""

from __future__ import annotations

import ast
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mtl_jax import config_files
from mtl_jax import cpu_tuning
from mtl_jax import interrupt
from mtl_jax import quiet

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file whose get_config() returns a ConfigDict.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for a multi-process run.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in the run.")
_COORDINATOR_TIMEOUT = flags.DEFINE_integer(
    "coordinator_timeout", 300, "Seconds to wait for every process of a multi-process run to "
    "join (jax.distributed.initialize's initialization_timeout).", lower_bound=1)

EXIT_USAGE = 2


def _fail(message: str) -> None:
  print(f"mtl_jax: error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


def _one_line(error: Exception) -> str:
  """The first line of an error, plus its last line when a traceback sits in between."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  return lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"


def _resolve_config_names(argv: list[str]) -> list[str]:
  """`--config=digits` -> the packaged config file's path (`mtl_jax.config_files`)."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      out[i] = "--config=" + config_files.resolve(arg.split("=", 1)[1])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = config_files.resolve(out[i + 1])
  return out


def _config_path(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1].split(":", 1)[0]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1].split(":", 1)[0]
  return None


# Free-form blocks (each method, model or dataset has its own keys), which the locked config
# cannot declare: --config.weighting_kwargs.<name>=<value>, --config.augment.<option>=<value>,
# --config.images.task_types.<task>=<kind>, ...; checked by their readers.
_FREE_FORM_PREFIXES = {f"--config.{block}.": {} for block in (
    "weighting_kwargs", "model.kwargs", "augment", "images.task_types", "images.task_losses",
    "dataset.tfds.task_types", "dataset.tfds.task_features")}


def _literal(text: str):
  """A Python literal (number, tuple, bool, ...) if `text` is one, else the string itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _split_free_form(argv: list[str]) -> list[str]:
  """Removes the free-form hyper-parameters from `argv` into `_FREE_FORM_PREFIXES`."""
  rest = []
  for arg in argv:
    prefix = next((p for p in _FREE_FORM_PREFIXES if arg.startswith(p)), None)
    if prefix is None:
      rest.append(arg)
      continue
    name, sep, value = arg[len(prefix):].partition("=")
    if not sep or not name or "." in name:
      _fail(f"expected {prefix}<name>=<value>, got {arg}")
    _FREE_FORM_PREFIXES[prefix][name] = _literal(value)
  return rest


_HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors (bad override, missing file) are one line and exit 2;
  `--help` lists the flags and every config key, and exits 0."""
  if any(arg in _HELP for arg in argv[1:]):
    from mtl_jax import cli_help  # pylint: disable=import-outside-toplevel
    print(cli_help.help_text(__doc__, flags.FLAGS.module_help(__name__)), end="")
    sys.exit(0)
  argv = sys.argv[:] = _resolve_config_names(_split_free_form(argv))  # config_flags reads it
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path):
    known = ", ".join(config_files.names())
    _fail(f"config file not found: {path}" + (f" (packaged configs: {known})" if known else ""))
  try:
    rest = flags.FLAGS(argv)
    if path is not None and _CONFIG.value is None:
      _fail(f"--config={path}: get_config() returned None; it must return a ConfigDict")
    if _CONFIG.value is not None:
      _CONFIG.value.keys()  # the file is loaded lazily: load it here, inside the try
    return rest
  except flags.UnrecognizedFlagError as e:
    if e.flagname.startswith("config."):
      _fail(f"unknown key {e.flagname} (in --{e.flagname})")
    _fail(_one_line(e))
  except flags.Error as e:
    _fail(_one_line(e))
  except (AttributeError, KeyError) as e:  # an override of a key the config does not have
    if "get_config" in str(e):
      _fail(f"--config={path} has no get_config() function returning a ConfigDict")
    message = str(e.args[0]) if e.args else str(e)
    name = message.splitlines()[0].strip("'\"") if message else ""
    for arg in argv:
      if arg.startswith("--config.") and name in arg.split("=", 1)[0].split("."):
        _fail(f"unknown key {arg.split('=', 1)[0][2:]} (in {arg})")
    _fail(f"--config={path}: unknown key {name!r}")
  except Exception as e:  # pylint: disable=broad-except  (raised by the config file itself)
    _fail(f"--config={path}: {type(e).__name__}: {_one_line(e)}")
  return []


def _apply_free_form(config) -> None:
  """Sets the free-form values of the command line (`_split_free_form`) in `config`."""
  for prefix, values in _FREE_FORM_PREFIXES.items():
    block = config
    for key in prefix[len("--config."):-1].split("."):
      block = block[key]
    block.update(values)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  if _CONFIG.value is None:
    _fail("--config is required, e.g. --config=configs/digits.py")
  if not _WORKDIR.value:
    _fail("--workdir is required")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # the console is the run's own lines (mtl_jax.report)
  with interrupt.handle_sigterm():  # the whole run: start-up and compilation included
    if interrupt.requested():
      print("mtl_jax: interrupted before the run started; nothing saved", file=sys.stderr,
            flush=True)
      return
    _run(_WORKDIR.value)


def _run(workdir: str) -> None:
  """Checks everything that can be checked before work, takes the workdir, trains."""
  from mtl_jax import peers  # pylint: disable=import-outside-toplevel
  from mtl_jax import sharding  # pylint: disable=import-outside-toplevel
  watch = None
  if _COORDINATOR.value and (_NUM_PROCESSES.value or 1) > 1 and _PROCESS_ID.value is not None:
    try:
      watch = peers.roll_call(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                              _COORDINATOR_TIMEOUT.value)
    except (peers.PeersMissing, ValueError, OSError) as e:
      print(f"mtl_jax: error: multi-process start-up: {e}", file=sys.stderr, flush=True)
      sys.exit(1)
  try:
    sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                    _PROCESS_ID.value, timeout_s=_COORDINATOR_TIMEOUT.value)
  except ValueError as e:  # a missing or inconsistent --coordinator_address/--num_processes/...
    _fail(f"multi-process setup: {_one_line(e)}")

  from mtl_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from mtl_jax import train  # pylint: disable=import-outside-toplevel
  from mtl_jax import validate  # pylint: disable=import-outside-toplevel
  from mtl_jax.config import ConfigError  # pylint: disable=import-outside-toplevel

  try:
    config = config_lib.complete(_CONFIG.value)
    _apply_free_form(config)
    config_lib.validate(config, num_devices=sharding.make_mesh().size)
    validate.check_workdir(workdir)
    if config.dataset.name == config_lib.IMAGES:  # image files: the MultiTaskTrainer
      from mtl_jax import trainer  # pylint: disable=import-outside-toplevel
      trainer.train_from_config(config, workdir)
    else:
      train.train_and_evaluate(config, workdir)
  except ConfigError as e:  # peers are not told: one that goes on must see this one stop
    _fail(str(e))
  except train.Interrupted as e:  # every process stops at the same step
    logging.info("%s", e)
    print(f"mtl_jax: {e}", file=sys.stderr, flush=True)
  except train.NonFiniteLossError as e:  # every process sees it at the same step
    print(f"mtl_jax: error: {e}", file=sys.stderr, flush=True)
    if watch is not None:
      watch.close()
    sys.exit(1)
  if watch is not None:
    watch.close()


def run() -> None:
  """The command (`python -m mtl_jax.main`, `mtl-jax`). It owns its process (importing mtl_jax
  sets nothing): it quiets the libraries' logs and tunes the CPU before flags, config or
  training start JAX's backend."""
  quiet.apply()
  cpu_tuning.apply()
  with interrupt.handle_sigterm():  # from the start: parsing, imports, start-up
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
