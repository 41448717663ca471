"""Krum and Multi-Krum: the task gradients closest to their nearest neighbours.

Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", NeurIPS 2017,
https://proceedings.neurips.cc/paper/2017/hash/f4b9ec30ad9f68f89b29639786cb62ef-Abstract.html
(Sec. 4, the Krum choice function; Multi-Krum in Sec. 5). Reference code: torchjd
(`aggregation/_krum.py`, `KrumWeighting`), a Gramian weighting like ours.

With n gradients of which f may be adversarial (`n_byzantine`), each gradient i scores

    s(i) = sum over the n - f - 2 gradients j != i closest to g_i of ||g_i - g_j||^2

and the update is the mean of the m (`n_selected`) gradients of smallest score (Krum: m = 1),
so the weights are 1/m on the selected tasks, 0 elsewhere (they sum to 1, as in torchjd). Every
distance comes from the Gram matrix, ||g_i - g_j||^2 = G_ii + G_jj - 2 G_ij (needs="gram").
Defaults: torchjd's n_selected=1; torchjd has no default for n_byzantine, so 0 here, the only
value Krum allows with three tasks (it needs n >= f + 3).

Deviations from torchjd: (1) its scores sum the distances, not their squares as the paper does;
`squared_distances=False` gives torchjd's. (2) Ties: torchjd takes whichever of tied scores
`topk` returns first; here the weight of the last selected place is shared equally by every
task tied for it, so the weights follow a permutation of the tasks. Tied scores are common: with
three tasks and f = 0 each score is the distance to the nearest neighbour, the same for the two
closest tasks, which then get 1/2 each. G is symmetrised first, so such ties are exact.

Missing labels: tasks without labels are left out (weight 0, never a neighbour); n counts the
labelled tasks, the neighbours are max(n - f - 2, 0) and m is at most n. With fewer than f + 3
labelled tasks every score is 0: all labelled tasks tie and get 1/n each (their mean).
Gradients of the shared parameters only (`allows_rep=False`, as torchjd).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds


class KrumState(NamedTuple):
  """Krum needs no state; it keeps the last step's weights for inspection."""
  weights: jnp.ndarray  # f32[T], the last step's weights (0 before the first step)


def pairwise_distances(gram: jnp.ndarray, squared: bool = True) -> jnp.ndarray:
  """f32[T, T]: ||g_i - g_j||^2 (or ||g_i - g_j||) from G, exactly symmetric, >= 0."""
  gram = 0.5 * (gram + gram.T)
  norms = jnp.diag(gram)
  distances = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
  return distances if squared else jnp.sqrt(distances)


def krum_scores(distances: jnp.ndarray, mask: jnp.ndarray, n_byzantine: int) -> jnp.ndarray:
  """f32[T]: s(i), the sum of task i's n - f - 2 smallest distances to the other masked tasks
  (+inf outside `mask`)."""
  num_tasks = distances.shape[0]
  others = mask[None, :] & ~jnp.eye(num_tasks, dtype=bool)
  nearest = jnp.sort(jnp.where(others, distances, jnp.inf), axis=1)
  num_neighbours = jnp.maximum(mask.sum() - n_byzantine - 2, 0)
  counted = jnp.arange(num_tasks)[None, :] < num_neighbours
  return jnp.where(mask, jnp.where(counted, nearest, 0.0).sum(axis=1), jnp.inf)


def select_smallest(scores: jnp.ndarray, mask: jnp.ndarray, n_selected: int) -> jnp.ndarray:
  """f32[T]: 1/m on the m masked tasks of smallest score, m = min(n_selected, #mask); tasks tied
  for the m-th place share what is left of its weight equally. All 0 if no task is masked."""
  count = jnp.minimum(n_selected, mask.sum())
  threshold = jnp.sort(scores)[jnp.maximum(count - 1, 0)]
  below = mask & (scores < threshold)
  tied = mask & (scores == threshold)
  share = (count - below.sum()) / jnp.maximum(tied.sum(), 1)
  weights = (jnp.where(below, 1.0, 0.0) + jnp.where(tied, share, 0.0)) / jnp.maximum(count, 1)
  return jnp.where(count > 0, weights, 0.0).astype(jnp.float32)


def krum_weights(gram: jnp.ndarray, mask: jnp.ndarray, n_byzantine: int, n_selected: int,
                 squared_distances: bool = True) -> jnp.ndarray:
  """f32[T]: Multi-Krum's weights over the tasks in `mask` (see the module docstring)."""
  distances = pairwise_distances(gram, squared_distances)
  return select_smallest(krum_scores(distances, mask, n_byzantine), mask, n_selected)


def make(n_byzantine: int = 0, n_selected: int = 1, squared_distances: bool = True) -> Weighting:
  """Krum's weights (see the module docstring).

  Args:
    n_byzantine: f, the number of task gradients that may be adversarial; the tasks must number
      at least f + 3.
    n_selected: m, how many gradients are averaged (1: Krum; more: Multi-Krum); at most T.
    squared_distances: score by squared distances (the paper) or by distances (torchjd).
  """
  if int(n_byzantine) != n_byzantine or n_byzantine < 0:
    raise ValueError(f"krum needs an integer n_byzantine >= 0, got {n_byzantine}")
  if int(n_selected) != n_selected or n_selected < 1:
    raise ValueError(f"krum needs an integer n_selected >= 1, got {n_selected}")
  n_byzantine, n_selected = int(n_byzantine), int(n_selected)

  def init(tasks) -> KrumState:
    num_tasks = len(task_kinds(tasks))
    if num_tasks < n_byzantine + 3 or num_tasks < n_selected:
      raise ValueError(f"krum with n_byzantine={n_byzantine}, n_selected={n_selected} needs at "
                       f"least {max(n_byzantine + 3, n_selected)} tasks, got {num_tasks}")
    return KrumState(jnp.zeros((num_tasks,), jnp.float32))

  def update(state: KrumState, inputs: WeightingInputs):
    del state
    weights = krum_weights(inputs.gram, labelled(inputs.counts), n_byzantine, n_selected,
                           squared_distances)
    return weights, KrumState(weights)

  return Weighting(init, update, needs="gram")
