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
