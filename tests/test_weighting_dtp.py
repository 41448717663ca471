"""Dynamic task prioritization (Guo et al., ECCV 2018): focal weight of the KPI average."""

import numpy as np
import pytest

from mtl_jax import weighting


def _focal(k, gamma=2.0):
  return -(1 - k) ** gamma * np.log(k)


def _run(method, kinds, kpis_per_step, counts_per_step=None):
  state = method.init(kinds)
  weights = []
  for i, kpis in enumerate(kpis_per_step):
    counts = None if counts_per_step is None else counts_per_step[i]
    w, state = method.update(state, weighting.make_inputs([1.0] * len(kpis), counts, kpis,
                                                          step=i))
    weights.append(np.asarray(w))
  return np.asarray(weights), state


def test_weight_is_the_focal_term_of_the_kpi_moving_average():
  weights, state = _run(weighting.get("dtp", alpha=0.5), 2, [[0.2, 0.9], [0.6, 0.7], [0.9, 0.5]])
  # kbar starts at the first observation, then kbar <- 0.5 k + 0.5 kbar
  averages = np.array([[0.2, 0.9], [0.4, 0.8], [0.65, 0.65]])
  np.testing.assert_allclose(weights, _focal(averages), rtol=1e-5)
  np.testing.assert_allclose(state.kpi_average, averages[-1], rtol=1e-6)


def test_default_gamma_is_2_and_gamma_0_gives_minus_log_k():
  weights, _ = _run(weighting.get("dtp"), 1, [[0.3]])
  np.testing.assert_allclose(weights[0], _focal(np.array([0.3]), 2.0), rtol=1e-6)
  weights, _ = _run(weighting.get("dtp", gamma=0.0), 1, [[0.3]])
  np.testing.assert_allclose(weights[0], -np.log([0.3]), rtol=1e-6)


def test_harder_tasks_get_larger_weights():
  weights, _ = _run(weighting.get("dtp"), 3, [[0.2, 0.5, 0.95]])
  assert weights[0][0] > weights[0][1] > weights[0][2] > 0


def test_regression_kpi_is_exp_of_minus_mae_over_scale():
  method = weighting.get("dtp", regression_scale=2.0)
  weights, state = _run(method, ("classification", "regression"), [[0.5, 1.0]])
  np.testing.assert_allclose(state.kpi_average, [0.5, np.exp(-0.5)], rtol=1e-6)
  np.testing.assert_allclose(weights[0], _focal(np.array([0.5, np.exp(-0.5)])), rtol=1e-5)


def test_a_binary_task_has_an_accuracy_kpi_like_classification():
  """Only error kinds (regression) are mapped through exp(-MAE / scale); binary accuracy is
  used as it is, whether the kinds come as strings or an int."""
  method = weighting.get("dtp", regression_scale=2.0)
  weights, state = _run(method, ("binary", "classification", "regression"), [[0.7, 0.7, 0.7]])
  np.testing.assert_allclose(state.kpi_average, [0.7, 0.7, np.exp(-0.35)], rtol=1e-6)
  np.testing.assert_allclose(weights[0][0], weights[0][1])


def test_kpis_of_0_and_1_are_clipped_to_finite_weights():
  weights, _ = _run(weighting.get("dtp", eps=1e-3), 2, [[0.0, 1.0]])
  np.testing.assert_allclose(weights[0], _focal(np.array([1e-3, 1 - 1e-3])), rtol=1e-4)
  assert np.isfinite(weights).all() and (weights > 0).all()


def test_a_task_without_labels_keeps_its_average():
  kpis = [[0.2, 0.4], [0.6, 0.0], [0.6, 0.8]]
  counts = [[5, 0], [5, 0], [5, 5]]  # task 1 is first labelled at step 2
  weights, state = _run(weighting.get("dtp", alpha=0.5), 2, kpis, counts)
  assert np.isfinite(weights).all()
  np.testing.assert_array_equal(weights[:2, 1], 0.0)  # no labels: weight 0
  np.testing.assert_allclose(weights[2], _focal(np.array([0.5, 0.8])), rtol=1e-5)
  np.testing.assert_allclose(state.kpi_average, [0.5, 0.8], rtol=1e-6)
  np.testing.assert_array_equal(state.observations, [3, 1])
  # the unlabelled step's KPI (0 by convention) does not pull the average down
  _, state = _run(weighting.get("dtp", alpha=0.5), 1, [[0.6], [0.0]], [[5], [0]])
  np.testing.assert_allclose(state.kpi_average, [0.6], rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.5}, {"gamma": -1.0},
                                    {"regression_scale": 0.0}, {"eps": 0.7}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match=next(iter(kwargs))):
    weighting.get("dtp", **kwargs)
