"""GO4Align: group weights from risk ratios, a moving prior and k-means grouping of the tasks.

Shen, Wang, Xiao, van Noord and Worring, "GO4Align: Group Optimization for Multi-Task
Alignment", NeurIPS 2024, https://arxiv.org/abs/2404.06486 (adaptive group risk minimisation:
dynamical group assignment and risk-guided group indicators); official code
github.com/autumn9999/GO4Align (`methods/cluster_methods.py`, class GO4ALIGN;
`experiments/nyuv2/trainer.py` for the defaults).

A loss-only method: at each step, with L the batch losses,

    s_i = (sum_j L_j) / L_i                       the risk ratio of task i,
    p  <- p * exp(-eta L) / sum(p * exp(-eta L))  the risk-guided prior (p = 1/T at start),
    v_i = s_i p_i,
    w_i = the mean of v over task i's group,      groups: k-means of the v_i into K groups,

and the loss is sum_i w_i L_i (head gradients weighted too). Defaults of the official code:
eta = `robust_step_size` = 1e-4.

Deviations: K (`num_groups`) defaults to 2 where the official trainer's default is 1, which
gives every task the mean of the v_i (equal weighting rescaled; `num_groups=1` reproduces it);
K is clipped to the number of labelled tasks. The official code clusters with kmeans_pytorch
(Lloyd's iterations from a random start: a local optimum); the v_i are one-dimensional, so here
the optimal k-means partition is computed exactly in the step (`kmeans_1d`): deterministic and
permutation-equivariant. L_i is guarded by `eps`
(s_i = sum_j L_j / (L_i + eps)).

Missing labels: a task without labels in the batch gets weight 0, is left out of the sums and
of the clustering, and its prior entry is not multiplied (its exp(-eta L_i) factor is 1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, WeightingInputs, labelled, task_kinds


class Go4alignState(NamedTuple):
  """The risk-guided prior p over the tasks (the official `adv_probs`)."""
  prior: jnp.ndarray  # f32[T], positive, sums to 1


def risk_ratios(losses: jnp.ndarray, mask: jnp.ndarray, eps: float) -> jnp.ndarray:
  """f32[T]: (sum_j L_j) / (L_i + eps) over the labelled tasks, 0 elsewhere."""
  losses = jnp.where(mask, jnp.maximum(losses, 0.0), 0.0)
  return jnp.where(mask, losses.sum() / (losses + eps), 0.0)


def update_prior(prior: jnp.ndarray, losses: jnp.ndarray, mask: jnp.ndarray,
                 eta: float) -> jnp.ndarray:
  """f32[T]: p * exp(-eta L), normalised to sum 1 (factor 1 for tasks without labels)."""
  new = prior * jnp.exp(-eta * jnp.where(mask, jnp.maximum(losses, 0.0), 0.0))
  return new / new.sum()


def kmeans_1d(values: jnp.ndarray, mask: jnp.ndarray, num_groups: int) -> jnp.ndarray:
  """f32[T]: each masked value replaced by the mean of its group in the optimal k-means
  partition of the masked values into min(num_groups, #masked) groups (0 where unmasked).

  In one dimension the optimal groups are runs of the sorted values, found exactly by dynamic
  programming over the run boundaries (Wang & Song, "Ckmeans.1d.dp", The R Journal 2011):
  D[k, j], the least squared error of k + 1 groups covering the j + 1 smallest values.
  """
  num_tasks = values.shape[0]
  count = mask.sum()
  groups = jnp.minimum(num_groups, jnp.maximum(count, 1))
  order = jnp.argsort(jnp.where(mask, values, jnp.inf))
  x = jnp.where(mask, values, 0.0)[order]          # the masked values first, ascending
  index = jnp.arange(num_tasks)
  # cost[i, j]: squared error of the run x[i..j] about its mean (inf for i > j).
  m = index[None, None, :]
  inside = (m >= index[:, None, None]) & (m <= index[None, :, None])  # [i, j, m]: i <= m <= j
  size = jnp.maximum(inside.sum(-1), 1)
  mean = jnp.sum(jnp.where(inside, x, 0.0), -1) / size
  cost = jnp.sum(jnp.where(inside, (x[None, None, :] - mean[..., None]) ** 2, 0.0), -1)
  cost = jnp.where(index[:, None] <= index[None, :], cost, jnp.inf)

  def extend(previous, _):
    """D[k, j] = min over starts i >= 1 of D[k - 1, i - 1] + cost[i, j], and the argmin i."""
    candidates = jnp.concatenate([jnp.full((1,), jnp.inf), previous[:-1]])[:, None] + cost
    return jnp.min(candidates, 0), jnp.argmin(candidates, 0)

  first = cost[0]
  _, starts = jax.lax.scan(extend, first, None, length=num_groups - 1)  # k = 1, ..., K - 1
  starts = jnp.concatenate([jnp.zeros((1, num_tasks), starts.dtype), starts.reshape(
      num_groups - 1, num_tasks)])

  def backtrack(r, carry):
    end, labels = carry
    k = num_groups - 1 - r
    active = k < groups
    start = jnp.where(k == 0, 0, starts[k, jnp.maximum(end, 0)])
    run = (index >= start) & (index <= end) & active
    return jnp.where(active, start - 1, end), jnp.where(run, k, labels)

  _, labels = jax.lax.fori_loop(0, num_groups, backtrack,
                                (count - 1, jnp.zeros((num_tasks,), jnp.int32)))
  members = (labels[:, None] == jnp.arange(num_groups)[None, :]) & (index < count)[:, None]
  centres = jnp.sum(jnp.where(members, x[:, None], 0.0), 0) / jnp.maximum(members.sum(0), 1)
  grouped = jnp.zeros((num_tasks,), x.dtype).at[order].set(centres[labels])
  return jnp.where(mask, grouped, 0.0)


def make(num_groups: int = 2, robust_step_size: float = 1e-4, eps: float = 1e-8) -> Weighting:
  """GO4Align's group weights (see the module docstring).

  Args:
    num_groups: K, the number of task groups (official trainer default 1; see the docstring).
    robust_step_size: eta, the step of the prior's exponentiated update (official 1e-4).
    eps: added to each loss in the risk ratio.
  """
  if num_groups < 1 or not robust_step_size >= 0 or not eps > 0:
    raise ValueError(f"go4align needs num_groups >= 1, robust_step_size >= 0, eps > 0; got "
                     f"{num_groups}, {robust_step_size}, {eps}")

  def init(tasks) -> Go4alignState:
    num_tasks = len(task_kinds(tasks))
    return Go4alignState(jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32))

  def update(state: Go4alignState, inputs: WeightingInputs):
    mask = labelled(inputs.counts)
    prior = update_prior(state.prior, inputs.losses, mask, robust_step_size)
    indicators = risk_ratios(inputs.losses, mask, eps) * prior
    return kmeans_1d(indicators, mask, num_groups), Go4alignState(prior)

  return Weighting(init, update)
