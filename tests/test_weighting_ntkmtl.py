"""NTKMTL (Qin et al., NeurIPS 2025): w_i = T (tr(G) / G_ii)^gamma, the update clipped."""

import jax
import numpy as np
import pytest

from mtl_jax import weighting


def _weights(jacobian, counts=None, **kwargs):
  jacobian = np.asarray(jacobian, np.float32)
  method = weighting.get("ntkmtl", **kwargs)
  inputs = weighting.make_inputs(np.ones(len(jacobian)), counts, grads=jacobian)
  w, state = jax.jit(method.update)(method.init(len(jacobian)), inputs)
  np.testing.assert_array_equal(state.weights, w)
  return np.asarray(w, np.float64)


def _official_update(jacobian, ntk_exp=0.5, max_norm=1.0):
  """The official `ntkgrad` and `overwrite_grad`, then torch's clip_grad_norm_, in numpy."""
  gram = jacobian @ jacobian.T
  w = (np.trace(gram) / np.diag(gram)) ** ntk_exp
  d = len(jacobian) * (w @ jacobian)
  return d * min(1.0, max_norm / (np.linalg.norm(d) + 1e-6)) if max_norm > 0 else d


@pytest.mark.parametrize("gamma", [0.5, 0.75])
@pytest.mark.parametrize("num_tasks", [2, 3, 6])
def test_the_unclipped_weights_are_t_times_the_ntk_ratio_to_the_gamma(num_tasks, gamma):
  rng = np.random.default_rng(num_tasks)
  jacobian = rng.normal(size=(num_tasks, 8)) * np.geomspace(0.01, 10.0, num_tasks)[:, None]
  gram = jacobian @ jacobian.T
  np.testing.assert_allclose(_weights(jacobian, gamma=gamma, max_norm=0.0),
                             num_tasks * (np.trace(gram) / np.diag(gram)) ** gamma, rtol=1e-5)


def test_with_gamma_one_half_every_weighted_gradient_has_norm_t_sqrt_trace():
  jacobian = np.random.default_rng(0).normal(size=(4, 6)) * [[1e-3], [0.1], [1.0], [30.0]]
  w = _weights(jacobian, max_norm=0.0)
  norms = np.linalg.norm(w[:, None] * jacobian, axis=1)
  np.testing.assert_allclose(norms, 4 * np.linalg.norm(jacobian), rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_the_update_equals_the_official_codes_clipped_update(scale):
  jacobian = scale * np.random.default_rng(1).normal(size=(3, 7))
  np.testing.assert_allclose(_weights(jacobian) @ jacobian, _official_update(jacobian),
                             rtol=1e-4)


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_unclipped_weights_do_not_change_when_the_gradients_are_scaled(scale):
  jacobian = np.random.default_rng(2).normal(size=(3, 5))
  np.testing.assert_allclose(_weights(scale * jacobian, max_norm=0.0),
                             _weights(jacobian, max_norm=0.0), rtol=1e-5)


def test_the_clip_limits_the_update_norm_to_max_norm():
  jacobian = 10.0 * np.random.default_rng(3).normal(size=(3, 5))
  for max_norm in (0.5, 2.0):
    np.testing.assert_allclose(np.linalg.norm(_weights(jacobian, max_norm=max_norm) @ jacobian),
                               max_norm, rtol=1e-5)


def test_tasks_without_labels_or_gradient_get_weight_zero_and_t_counts_the_others():
  jacobian = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
  w = _weights(jacobian, counts=[2, 0, 2, 2], max_norm=0.0)  # task 3: labelled, zero gradient
  np.testing.assert_allclose(w, [2 * np.sqrt(10.0), 0.0, 2 * np.sqrt(10.0 / 9.0), 0.0],
                             rtol=1e-6)
  np.testing.assert_array_equal(_weights(np.zeros((3, 2))), [0.0, 0.0, 0.0])


@pytest.mark.parametrize("kwargs", [{"gamma": 0.0}, {"gamma": -0.5}, {"max_norm": -1.0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="ntkmtl"):
    weighting.get("ntkmtl", **kwargs)
