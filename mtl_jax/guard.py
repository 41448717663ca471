"""The non-finite guard: is every part of the new train state finite, once per dispatch?

Losses can stay finite while the state is not (Adam at a huge learning rate: losses ~1e30,
second moments Inf), so the loop checks the whole state, not only the losses, before it logs
or saves anything: a non-finite state is never checkpointed. The check is one fused reduction
per part inside the dispatch's jit, a few passes over memory against the thousands of a
dispatch's steps, and a handful of booleans to fetch.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The parts of a TrainState the guard reports on, in the order of `finite_parts`.
PARTS = ("params", "model state", "weighting state", "optimizer state", "task weights")


def _parts(state: Any) -> tuple:
  return (state.params, state.model_state, state.opt_state.weighting, state.opt_state.optimizer,
          state.task_weights)


def all_finite(tree: Any) -> jnp.ndarray:
  """bool[]: whether every floating-point value of `tree` is finite (True when it has none)."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.stack(leaves).all() if leaves else jnp.bool_(True)


def finite_parts(state: Any) -> jnp.ndarray:
  """bool[len(PARTS)]: whether each part of the train state `state` is all finite."""
  return jnp.stack([all_finite(part) for part in _parts(state)])


def is_finite(summary: dict) -> bool:
  """Whether a dispatch's fetched summary (`mtl_jax.train.summarize`) shows finite losses and
  a finite state."""
  return summary["bad_step"] < 0 and bool(np.all(summary["finite_state"]))


def describe(summary: dict, task_names: Sequence[str], first: int, length: int,
             last_good: int | None) -> str:
  """What went non-finite in a dispatch of steps first+1 .. first+length (not `is_finite`).

  Args:
    summary: the dispatch's fetched summary (`mtl_jax.train.summarize`): `bad_step` (first step
      with a non-finite loss, -1 if none), `bad_tasks`, `finite_state` (`finite_parts`).
    task_names: the tasks, in the order of `bad_tasks`.
    first, length: the dispatch's first step and number of steps.
    last_good: the newest checkpoint, all of whose values are finite, or None.
  """
  bad_parts = [p for p, ok in zip(PARTS, np.asarray(summary["finite_state"])) if not ok]
  if summary["bad_step"] >= 0:
    tasks = [t for t, bad in zip(task_names, summary["bad_tasks"]) if bad]
    what = f"non-finite loss at step {int(summary['bad_step'])} in task(s) {tasks}"
    if bad_parts:
      what += f" and in the {', '.join(bad_parts)}"
  else:
    steps = f"step {first + 1}" if length == 1 else f"steps {first + 1}-{first + length}"
    what = f"non-finite values in the {', '.join(bad_parts)} after {steps} (losses finite)"
  saved = ("no checkpoint was saved yet" if last_good is None
           else f"the last good checkpoint is step {last_good}")
  return f"{what}; stopped without saving, {saved}"
