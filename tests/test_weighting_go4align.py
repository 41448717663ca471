"""GO4Align (Shen et al., NeurIPS 2024): group means of risk ratio times a moving prior."""

import functools
import itertools

import jax
import numpy as np
import pytest

from mtl_jax import weighting

LOSSES = np.array([[1.0, 2.0, 0.5, 4.0, 0.7], [0.9, 2.5, 0.4, 3.0, 0.8],
                   [1.1, 1.5, 0.6, 5.0, 0.6]], np.float32)  # 3 steps x 5 tasks


@functools.cache
def _method(**kwargs):
  method = weighting.get("go4align", **kwargs)
  return method, jax.jit(method.update)


def _run(losses, counts=None, **kwargs):
  """[weights f64[T]] of each step, and the last state."""
  method, update = _method(**kwargs)
  state, out = method.init(losses.shape[1]), []
  for step, row in enumerate(losses):
    w, state = update(state, weighting.make_inputs(row, counts, step=step))
    out.append(np.asarray(w, np.float64))
  return out, state


def _indicators(losses, eta):
  """v_i = (sum_j L_j / L_i) p_i at each step, the prior p updated by exp(-eta L) first."""
  prior, out = np.full(losses.shape[1], 1.0 / losses.shape[1]), []
  for row in np.asarray(losses, np.float64):
    prior = prior * np.exp(-eta * row)
    prior /= prior.sum()
    out.append(row.sum() / row * prior)
  return out


def _best_grouping(values, k):
  """The group means of the k-means optimum of 1-D values: the best split of the sorted values
  into k contiguous runs (brute force)."""
  order = np.argsort(values)
  best, best_cost = None, np.inf
  for cuts in itertools.combinations(range(1, len(values)), k - 1):
    runs = np.split(values[order], cuts)
    cost = sum(((r - r.mean()) ** 2).sum() for r in runs)
    if cost < best_cost:
      means = np.concatenate([np.full(len(r), r.mean()) for r in runs])
      best, best_cost = np.empty_like(values), cost
      best[order] = means
  return best


@pytest.mark.parametrize("num_groups", [1, 2, 3, 5])
def test_weights_are_the_k_means_group_centres_of_risk_ratio_times_prior(num_groups):
  eta = 0.3  # large, so that the prior moves visibly in three steps
  weights, _ = _run(LOSSES, num_groups=num_groups, robust_step_size=eta)
  for step, v in enumerate(_indicators(LOSSES, eta)):
    np.testing.assert_allclose(weights[step], _best_grouping(v, num_groups), rtol=1e-5)


def test_one_group_gives_every_task_the_mean_and_t_groups_give_each_its_own_indicator():
  (one,), _ = _run(LOSSES[:1], num_groups=1)
  (own,), _ = _run(LOSSES[:1], num_groups=5)
  v = _indicators(LOSSES[:1], 1e-4)[0]
  np.testing.assert_allclose(one, np.full(5, v.mean()), rtol=1e-5)
  np.testing.assert_allclose(own, v, rtol=1e-5)


def test_the_prior_is_the_normalised_product_of_exp_minus_eta_loss():
  _, state = _run(LOSSES, robust_step_size=0.3)
  expected = np.exp(-0.3 * LOSSES.astype(np.float64).sum(0))
  np.testing.assert_allclose(state.prior, expected / expected.sum(), rtol=1e-5)


def test_a_task_without_labels_gets_weight_zero_and_its_prior_is_not_multiplied():
  counts = np.array([4, 0, 4, 4, 4])
  losses = LOSSES[:1] * (counts > 0)
  (w,), state = _run(losses, counts=counts, num_groups=4, robust_step_size=0.3)
  assert w[1] == 0.0
  mask = counts > 0
  v = _indicators(losses[:, mask], 0.3)[0]  # the other four tasks, each its own group
  prior = np.where(mask, np.exp(-0.3 * losses[0]), 1.0)
  np.testing.assert_allclose(w[mask] / v, np.full(4, prior[mask].sum() / prior.sum()),
                             rtol=1e-5)  # the unlabelled task's prior mass stays with it
  np.testing.assert_allclose(state.prior, prior / prior.sum(), rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{"num_groups": 0}, {"robust_step_size": -1.0},
                                    {"eps": 0.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="go4align"):
    weighting.get("go4align", **kwargs)
