"""Per-task gradients from one forward pass: the Jacobian the gradient methods combine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import gradients, models, train, weighting
from mtl_jax.models.hps import TRUNK
from mtl_jax.tasks import Task

TASKS = (Task("a", "classification", ("x", "y", "z")), Task("b", "regression"))


@pytest.fixture(name="problem")
def _problem():
  model = models.HardParameterSharing(tasks=TASKS, backbone_spec=(8,), shared_layers=(6,),
                                      task_layers=(4,))
  x = jax.random.normal(jax.random.PRNGKey(0), (10, 5))
  labels = {"a": jnp.array([0, 1, 2, -1, 0, 1, 2, 0, 1, -1]),
            "b": jnp.array([0.5, jnp.nan, 1.0, 2.0, 0.0, 1.0, jnp.nan, 0.3, 0.2, 0.1])}
  params = model.init(jax.random.PRNGKey(1), x)["params"]

  def losses_of(params, rep=None):
    outputs, _ = model.apply({"params": params}, x, rep=rep)
    return mj.losses.task_losses(TASKS, outputs, labels)[0]

  def trunk_fn(trunk_params):
    return model.apply({"params": {**params, **trunk_params}}, x, heads=False), None

  def heads_fn(head_params, rep, _):
    return losses_of({**params, **head_params}, rep), None

  return model, x, params, losses_of, trunk_fn, heads_fn


def _close(a, b):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)


@pytest.mark.parametrize("unroll", [False, True])
def test_params_mode_gives_the_jacobian_of_the_losses_wrt_the_shared_params(problem, unroll):
  _, _, params, losses_of, trunk_fn, heads_fn = problem
  got = gradients.task_gradients(trunk_fn, heads_fn, params, grad_wrt="params", unroll=unroll)
  jacobian = jax.jacrev(losses_of)(params)
  _close(got.task_grads, {k: jacobian[k] for k in TRUNK})
  _close(got.losses, losses_of(params))


def test_heads_get_their_own_task_gradient_unweighted(problem):
  _, _, params, losses_of, trunk_fn, heads_fn = problem
  got = gradients.task_gradients(trunk_fn, heads_fn, params, grad_wrt="params")
  total = jax.grad(lambda p: losses_of(p).sum())(params)
  _close(got.head_grads, {k: v for k, v in total.items() if k not in TRUNK})
  assert set(got.head_grads) == {"head_a", "head_b", "out_a", "out_b"}


def test_rep_mode_gives_the_jacobian_wrt_the_representation(problem):
  model, x, params, losses_of, trunk_fn, heads_fn = problem
  got = gradients.task_gradients(trunk_fn, heads_fn, params, grad_wrt="rep")
  rep = model.apply({"params": params}, x, heads=False)
  _close(got.task_grads, jax.jacrev(lambda r: losses_of(params, r))(rep))


@pytest.mark.parametrize("grad_wrt", ["params", "rep"])
def test_weights_combine_into_the_gradient_of_the_weighted_loss(problem, grad_wrt):
  _, _, params, losses_of, trunk_fn, heads_fn = problem
  got = gradients.task_gradients(trunk_fn, heads_fn, params, grad_wrt=grad_wrt)
  method = weighting.get("manual", weights=(2.0, 0.5))
  grads, weights, _, gram = gradients.apply_weighting(
      method, method.init(2), weighting.make_inputs(got.losses), got)
  np.testing.assert_allclose(weights, [2.0, 0.5])
  weighted = jax.grad(lambda p: losses_of(p) @ jnp.array([2.0, 0.5]))(params)
  _close({k: grads[k] for k in TRUNK}, {k: weighted[k] for k in TRUNK})
  assert gram.shape == (2, 2) and np.all(np.diag(gram) > 0)


def test_gram_only_gives_the_gram_of_the_jacobian_without_building_it(problem):
  _, _, params, losses_of, trunk_fn, heads_fn = problem
  got = gradients.task_gradients(trunk_fn, heads_fn, params, grad_wrt="params",
                                 gram_only=True)
  jacobian = jax.jacrev(losses_of)(params)
  expected = weighting.gram_matrix({k: jacobian[k] for k in TRUNK})
  np.testing.assert_allclose(got.gram, expected, rtol=1e-5, atol=1e-7)
  method = weighting.get("mgda")
  grads, _, _, gram = gradients.apply_weighting(
      method, method.init(2), weighting.make_inputs(got.losses, key=jax.random.PRNGKey(0)), got)
  full = gradients.task_gradients(trunk_fn, heads_fn, params, grad_wrt="params")
  want, _, _, _ = gradients.apply_weighting(
      method, method.init(2), weighting.make_inputs(full.losses, key=jax.random.PRNGKey(0)),
      full)
  np.testing.assert_allclose(gram, expected, rtol=1e-5, atol=1e-7)
  _close(grads, want)


def _dense_trunk_gram(x, d, bias):
  """The Gram matrix of one Dense layer's per-task gradients from its Jacobian."""
  rows = [np.concatenate([(x.T @ dt).ravel()] + ([dt.sum(0)] if bias else [])) for dt in d]
  return np.array([[a @ b for b in rows] for a in rows])


@pytest.mark.parametrize("batch,width", [(10, 5), (4, 50)])  # the Jacobian's and the K's way
@pytest.mark.parametrize("bias", [True, False])
def test_a_dense_layers_gram_from_its_inputs_and_output_cotangents(batch, width, bias):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, width)).astype(np.float32)
  d = rng.normal(size=(3, batch, 6)).astype(np.float32)
  np.testing.assert_allclose(gradients.dense_gram([x], [d], [bias]),
                             _dense_trunk_gram(x, d, bias), rtol=1e-4)


def test_trunks_with_other_trainable_layers_need_the_jacobian():
  model = models.HardParameterSharing(tasks=TASKS, backbone_spec=(4, "p"), shared_layers=(),
                                      task_layers=())
  x = jnp.ones((2, 8, 8, 3))
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  trunk, _ = gradients.split_params(params)
  trunk_fn = lambda p: (model.apply({"params": {**params, **p}}, x, heads=False), None)
  assert gradients.dense_taps(trunk_fn, trunk) is None


def test_an_all_dense_trunk_is_tapped_at_every_dense_output(problem):
  _, _, params, _, trunk_fn, _ = problem
  taps, biases = gradients.dense_taps(trunk_fn, gradients.split_params(params)[0])
  assert [t.shape for t in taps] == [(10, 8), (10, 6)] and biases == [True, True]


def test_gradient_path_trains_exactly_like_the_loss_path(tmp_path, tiny_config):
  tiny_config.num_steps = tiny_config.log_every = tiny_config.eval_every = 50
  tiny_config.checkpoint_every = 50
  plain = mj.train_and_evaluate(tiny_config, str(tmp_path / "plain"))
  tiny_config.grad_diagnostics = True
  diagnosed = mj.train_and_evaluate(tiny_config, str(tmp_path / "diagnosed"))
  assert diagnosed == pytest.approx(plain, rel=1e-4, abs=1e-6)


def test_rep_mode_is_refused_for_methods_not_defined_on_representations(tiny_config):
  weighting.REGISTRY["_params_only"] = lambda: weighting.Weighting(
      lambda tasks: (), lambda state, inputs: (jnp.ones(3), state), needs="gram")
  try:
    tiny_config.weighting = "_params_only"
    tiny_config.weighting_kwargs = {"grad_wrt": "rep"}
    with pytest.raises(mj.ConfigError, match="not defined on representation gradients"):
      train.build_setup(mj.config.complete(tiny_config),
                        mj.data.load(tiny_config.dataset).tasks)
  finally:
    del weighting.REGISTRY["_params_only"]
