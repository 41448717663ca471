"""NTKMTL-SR (Qin et al., NeurIPS 2025): NTK eigenvalue ratios from representation gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import build, weighting
from mtl_jax.errors import ConfigError

BATCH, WIDTH, TASKS = 10, 3, 3  # 10 rows in n = 4 chunks: torch.chunk's runs of 3, 3, 3, 1


def _heads(z, targets):
  """Per-example losses f32[B, T] of three linear heads with different scales."""
  kernels = jnp.array([[1.0, -0.5, 2.0], [0.3, 0.8, -1.0], [-2.0, 0.1, 0.4]]) * jnp.array(
      [1.0, 5.0, 0.2])
  return (z @ kernels - targets) ** 2


def _official_eigenvalues(z, targets, num_chunks):
  """lambda_i: the largest eigenvalue of J_i J_i^T, row j of J_i = d(chunk j's mean loss)/dZ."""
  starts = range(0, BATCH, -(-BATCH // num_chunks))
  out = []
  for task in range(TASKS):
    rows = []
    for start in starts:
      chunk_loss = lambda z, s=start, t=task: _heads(z, targets)[s:s + -(-BATCH // num_chunks),
                                                                    t].mean()
      rows.append(np.asarray(jax.grad(chunk_loss)(z), np.float64).ravel())
    jacobian = np.stack(rows)
    out.append(np.linalg.eigvalsh(jacobian @ jacobian.T)[-1])
  return np.array(out)


def _our_weights(z, targets, counts=None, **kwargs):
  """The method's weights from D_i = dL_i/dZ, L_i the batch-mean loss (the representation mode)."""
  losses_fn = lambda z: _heads(z, targets).mean(0)
  rep_grads = jax.jacrev(losses_fn)(z)  # [T, B, W]
  method = weighting.get("ntkmtl_sr", **kwargs)
  inputs = weighting.make_inputs(losses_fn(z), counts, grads=rep_grads)
  weights, state = jax.jit(method.update)(method.init(TASKS), inputs)
  np.testing.assert_array_equal(state.weights, weights)
  return np.asarray(weights, np.float64)


@pytest.mark.parametrize("num_chunks", [1, 4])
@pytest.mark.parametrize("gamma", [0.5, 0.75])
def test_weights_are_the_ratio_of_the_largest_chunk_ntk_eigenvalues(num_chunks, gamma):
  rng = np.random.default_rng(num_chunks)
  z = jnp.asarray(rng.normal(size=(BATCH, WIDTH)), jnp.float32)
  targets = jnp.asarray(rng.normal(size=(BATCH, TASKS)), jnp.float32)
  eigenvalues = _official_eigenvalues(z, targets, num_chunks)
  np.testing.assert_allclose(_our_weights(z, targets, gamma=gamma, num_chunks=num_chunks),
                             (eigenvalues.sum() / eigenvalues) ** gamma, rtol=1e-4)


def test_a_task_without_labels_or_representation_gradient_gets_weight_zero():
  rep_grads = np.zeros((3, 8, 2), np.float32)
  rep_grads[0, :2] = 1.0
  rep_grads[2, 5:] = 3.0
  method = weighting.get("ntkmtl_sr")
  inputs = weighting.make_inputs(np.ones(3), [8, 0, 8], grads=rep_grads)
  weights, _ = method.update(method.init(3), inputs)
  # chunks of 2 rows: lambda_0 ~ 2 * 2 = 4 (rows 0-1), lambda_2 ~ 2 * 2 * 9 = 36 (rows 6-7)
  np.testing.assert_allclose(weights, [np.sqrt(40 / 4), 0.0, np.sqrt(40 / 36)], rtol=1e-6)


def test_the_run_takes_representation_gradients_and_refuses_parameter_ones():
  method = weighting.get("ntkmtl_sr")
  model = build.build_model(_digits_config(), _tasks())
  assert build.gradient_mode("ntkmtl_sr", method, None, False, model) == "rep"
  with pytest.raises(ConfigError, match="representation gradients only.*grad_wrt='rep'"):
    build.gradient_mode("ntkmtl_sr", method, "params", False, model)


def _digits_config():
  from mtl_jax.config import default_config  # pylint: disable=import-outside-toplevel
  return default_config()


def _tasks():
  from mtl_jax.tasks import Task  # pylint: disable=import-outside-toplevel
  return (Task("a", classes=(0, 1)), Task("b", classes=(0, 1)))


@pytest.mark.parametrize("kwargs", [{"gamma": 0.0}, {"num_chunks": 0}])
def test_bad_hyperparameters_are_value_errors(kwargs):
  with pytest.raises(ValueError, match="ntkmtl_sr"):
    weighting.get("ntkmtl_sr", **kwargs)
