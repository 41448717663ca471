"""The order of training examples: a plain shuffle, or resampling balanced by label presence.

Iterator state: the order is a pure function of (seed, step). `Sampler.indices` gives the global
batch of any step without replaying the steps before it, so the train step saved in a checkpoint
is the input pipeline's whole position: a run resumed at step s asks for steps s, s + 1, ... and
draws exactly the batches the interrupted run would have drawn. Nothing else needs saving.

Each epoch is `steps_per_epoch` global batches of `batch_size` example indices, drawn from the
epoch's order: a fresh permutation (no `probabilities`), or `num_examples` draws with replacement
weighted by `probabilities` (e.g. `balanced_probabilities`). The epoch's order depends only on
(seed, epoch). The examples that do not fill a last batch are skipped for that epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Mapping, Sequence

import numpy as np

from mtl_jax import tasks as tasks_lib


def labelled_masks(tasks: Sequence[tasks_lib.Task],
                   labels: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{task: bool[N]}: whether each example is labelled for the task, i.e. has at least one
  present label element (labels [N, *label_shape], as `mtl_jax.tasks.encode` gives them)."""
  return {t.name: tasks_lib.labelled_examples(t, np.asarray(labels[t.name])) for t in tasks}


def balanced_probabilities(labelled: Mapping[str, np.ndarray]) -> np.ndarray:
  """f64[N] sampling probabilities that give each task about the same labelled examples.

  Example i gets sum over the tasks t it is labelled for of 1 / (n_t * T), where n_t counts
  the examples labelled for t and T is the number of tasks; the result is normalised to sum
  to 1. An example labelled for no task gets 0. When each example is labelled for one task,
  every task's labelled examples make up exactly 1/T of the probability mass; overlapping
  labels favour the tasks they overlap with.

  Args:
    labelled: {task: bool[N]}, True where the example has that task's label
      (see `labelled_masks`).

  Raises:
    ValueError: the masks differ in length, or no example has any label.
  """
  masks = [np.asarray(m, bool) for m in labelled.values()]
  if len({m.shape for m in masks}) > 1:
    raise ValueError(f"label masks differ in shape: {sorted({m.shape for m in masks})}")
  if not masks or not any(m.any() for m in masks):
    raise ValueError("no example has a label, so none can be sampled")
  probabilities = np.zeros(masks[0].shape, np.float64)
  for mask in masks:
    if mask.any():
      probabilities += mask / (mask.sum() * len(masks))
  return probabilities / probabilities.sum()


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, num_examples: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


@dataclasses.dataclass(frozen=True)
class _Distribution:
  """A probability vector, hashed by its contents, to key the per-epoch draw cache."""
  digest: str
  cumulative: np.ndarray = dataclasses.field(compare=False, repr=False)

  @classmethod
  def of(cls, probabilities: np.ndarray) -> "_Distribution":
    return cls(hashlib.sha256(probabilities.tobytes()).hexdigest(), np.cumsum(probabilities))


@functools.lru_cache(maxsize=4)
def _epoch_draw(seed: int, epoch: int, distribution: _Distribution) -> np.ndarray:
  """len(p) indices drawn with replacement, index i with probability p[i]."""
  cumulative = distribution.cumulative
  uniform = np.random.default_rng([seed, epoch]).random(len(cumulative)) * cumulative[-1]
  draw = np.searchsorted(cumulative, uniform, side="right")
  return np.minimum(draw, len(cumulative) - 1)


@dataclasses.dataclass(frozen=True)
class Sampler:
  """Global batches of example indices, a pure function of (seed, step).

  Attributes:
    num_examples: size of the training split.
    batch_size: global batch size.
    seed: the data-order seed.
    probabilities: optional f64[num_examples] (any non-negative weights; normalised here):
      resample every epoch with replacement by these, e.g. `balanced_probabilities(...)`.
      None: a plain shuffle, each example once per epoch.
  """
  num_examples: int
  batch_size: int
  seed: int
  probabilities: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
  _distribution: _Distribution | None = dataclasses.field(init=False, default=None, repr=False)

  def __post_init__(self):
    if self.num_examples < self.batch_size:
      raise ValueError(f"{self.num_examples} training examples cannot fill one batch of "
                       f"{self.batch_size}")
    if self.probabilities is not None:
      probabilities = _checked_probabilities(self.probabilities, self.num_examples)
      object.__setattr__(self, "probabilities", probabilities)
      object.__setattr__(self, "_distribution", _Distribution.of(probabilities))

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.batch_size

  def epoch_order(self, epoch: int) -> np.ndarray:
    """int[num_examples]: the example indices of `epoch`, in the order batches take them."""
    if self._distribution is None:
      return _epoch_permutation(self.seed, self.num_examples, int(epoch))
    return _epoch_draw(self.seed, int(epoch), self._distribution)

  def indices(self, steps: Sequence[int]) -> np.ndarray:
    """int32[len(steps), batch_size]: the example indices of each step's global batch."""
    out = np.empty((len(steps), self.batch_size), np.int32)
    for i, step in enumerate(steps):
      epoch, k = divmod(int(step), self.steps_per_epoch)
      out[i] = self.epoch_order(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
    return out


def _checked_probabilities(probabilities, num_examples: int) -> np.ndarray:
  p = np.array(probabilities, np.float64)
  if p.shape != (num_examples,):
    raise ValueError(f"probabilities have shape {p.shape}; expected ({num_examples},)")
  if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
    raise ValueError("probabilities must be finite, non-negative, and not all zero")
  p /= p.sum()
  p.flags.writeable = False
  return p
