"""The weighting interface: a pure (init, update) pair shaped like an optax transformation.

`init(num_tasks) -> state` and `update(state, *, losses, counts, key, step) -> (weights, state)`.
`losses` f32[T] are the masked per-task losses of the batch, `counts` i32[T] their numbers of
labelled examples, `key` a PRNG key drawn from (seed, step), `step` the int32 train step. The
train step forms the update from sum_i weights_i * grad(loss_i) with one backward pass; the state
lives in the optimizer state (`MultiTaskOptState.weighting`), so one checkpoint restores it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple


class Weighting(NamedTuple):
  """A task-weighting method: pure `init` and `update` (see the module docstring)."""
  init: Callable[[int], Any]
  update: Callable[..., tuple[Any, Any]]
