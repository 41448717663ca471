"""Krum (Blanchard et al., NeurIPS 2017): average the m gradients whose n - f - 2 nearest
neighbours are closest (sum of squared distances)."""

import itertools

import jax
import numpy as np
import pytest

from mtl_jax import weighting

# torchjd's tests/unit/aggregation/test_values.py: row 2 is adversarial.
J_TORCHJD = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [75.0, -666.0, 23.0], [1.0, 2.0, 3.0],
                      [2.0, 0.0, 1.0]], np.float32)


def _weights(jacobian, counts=None, **kwargs):
  jacobian = np.asarray(jacobian, np.float32)
  method = weighting.get("krum", **kwargs)
  inputs = weighting.make_inputs(np.ones(len(jacobian)), counts, grads=jacobian)
  w, state = jax.jit(method.update)(method.init(len(jacobian)), inputs)
  np.testing.assert_array_equal(state.weights, w)
  return np.asarray(w, np.float64)


def _brute_force(jacobian, n_byzantine, n_selected):
  """Blanchard et al.'s scores from the gradients themselves; the m smallest get 1/m each."""
  jacobian = np.asarray(jacobian, np.float64)
  num_tasks = len(jacobian)
  scores = []
  for i in range(num_tasks):
    squared = [np.sum((jacobian[i] - jacobian[j]) ** 2) for j in range(num_tasks) if j != i]
    scores.append(np.sum(np.sort(squared)[:num_tasks - n_byzantine - 2]))
  order = np.argsort(scores)
  assert scores[order[n_selected - 1]] < scores[order[n_selected]] if n_selected < num_tasks \
      else True, "a tie at the last selected place; pick another seed"
  expected = np.zeros(num_tasks)
  expected[order[:n_selected]] = 1.0 / n_selected
  return expected


@pytest.mark.parametrize("num_tasks, n_byzantine, n_selected",
                         [(4, 0, 1), (5, 1, 1), (5, 1, 3), (6, 2, 2), (8, 3, 4), (8, 0, 8)])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_selected_gradients_have_the_smallest_sums_of_squared_neighbour_distances(
    num_tasks, n_byzantine, n_selected, seed):
  rng = np.random.default_rng(seed)
  jacobian = rng.normal(size=(num_tasks, 6)) * rng.lognormal(size=(num_tasks, 1))
  np.testing.assert_allclose(
      _weights(jacobian, n_byzantine=n_byzantine, n_selected=n_selected),
      _brute_force(jacobian, n_byzantine, n_selected), atol=1e-6)


def test_torchjds_pinned_multi_krum_values_leave_out_the_adversarial_gradient():
  # torchjd: KrumWeighting(1, 4)(G) = (0.25, 0.25, 0, 0.25, 0.25), in both distance forms.
  for squared in (True, False):
    np.testing.assert_allclose(
        _weights(J_TORCHJD, n_byzantine=1, n_selected=4, squared_distances=squared),
        [0.25, 0.25, 0.0, 0.25, 0.25])


def test_krum_picks_a_gradient_of_the_cluster_not_the_outlier():
  jacobian = np.array([[1.0, 0.0], [1.1, 0.1], [0.9, -0.1], [1.0, 0.3], [-50.0, 80.0]])
  w = _weights(jacobian, n_byzantine=1)
  np.testing.assert_array_equal(w, [1.0, 0.0, 0.0, 0.0, 0.0])  # scores 0.04, 0.07, 0.1, 0.14


def test_tied_scores_share_the_last_selected_place_equally():
  # Three tasks, f = 0: each score is the distance to the nearest neighbour, the same for the
  # two closest tasks (0 and 1), which share Krum's single place.
  np.testing.assert_allclose(_weights([[1.0, 0.0], [1.2, 0.0], [-3.0, 1.0]]), [0.5, 0.5, 0.0])
  np.testing.assert_allclose(_weights(np.zeros((4, 3))), [0.25] * 4)  # every score 0


def test_permuting_the_tasks_permutes_the_weights_even_with_ties():
  jacobian = np.array([[1.0, 0.0], [1.2, 0.0], [-3.0, 1.0], [0.0, 2.0]])
  w = _weights(jacobian)
  for perm in itertools.permutations(range(4)):
    np.testing.assert_allclose(_weights(jacobian[list(perm)]), w[list(perm)], atol=1e-7)


def test_tasks_without_labels_are_neither_selected_nor_neighbours():
  rng = np.random.default_rng(3)
  jacobian = rng.normal(size=(6, 4))
  jacobian[[1, 4]] = 0.0
  w = _weights(jacobian, counts=[3, 0, 3, 3, 0, 3], n_byzantine=1, n_selected=2)
  labelled = [0, 2, 3, 5]
  np.testing.assert_allclose(w[labelled], _brute_force(jacobian[labelled], 1, 2), atol=1e-6)
  assert w[1] == w[4] == 0.0


def test_fewer_labelled_tasks_than_f_plus_3_give_their_mean():
  w = _weights([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [0.0, 0.0]], counts=[2, 2, 2, 0],
               n_byzantine=1)
  np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3, 0.0])


@pytest.mark.parametrize("kwargs", [{"n_byzantine": -1}, {"n_byzantine": 0.5},
                                    {"n_selected": 0}, {"n_selected": 1.5}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="krum"):
    weighting.get("krum", **kwargs)


@pytest.mark.parametrize("kwargs, num_tasks", [({"n_byzantine": 1}, 3), ({"n_selected": 4}, 3)])
def test_too_few_tasks_for_the_hyperparameters_is_a_value_error(kwargs, num_tasks):
  with pytest.raises(ValueError, match="krum"):
    weighting.get("krum", **kwargs).init(num_tasks)
