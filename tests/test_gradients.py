"""Per-task gradients from one forward pass, for every kind of model the contract allows.

The production path (`train._task_gradients`) is checked against `jax.jacrev` of the loss
vector, task by task: the rows of J over the shared parameters, each task parameter's own row,
and in the representation mode the rows over the representation.
"""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import build, gradients, models, train, weighting
from mtl_jax.models import base
from mtl_jax.tasks import Task

from contract_models import CrossStitch, PerTaskReps

TASKS = (Task("a", "classification", ("x", "y", "z")), Task("b", "regression"))
NAMES = ("a", "b")
X = jax.random.normal(jax.random.PRNGKey(0), (10, 5))
LABELS = {"a": jnp.array([0, 1, 2, -1, 0, 1, 2, 0, 1, -1]),
          "b": jnp.array([0.5, jnp.nan, 1.0, 2.0, 0.0, 1.0, jnp.nan, 0.3, 0.2, 0.1])}


def _registered(name):
  return models.get(name, TASKS, base.ModelSpec(backbone_spec=(8,), shared_layers=(6,),
                                                task_layers=(4,)))


# Every spec-built architecture (`multi_lenet`, a fixed network for 28x28 images, is a split
# model like `hps`; test_multi_lenet.py trains it in both gradient modes).
MODELS = {**{name: (lambda n=name: _registered(n)) for name in models.spec_built()},
          "user_heads": lambda: models.get("hps", TASKS, base.ModelSpec(
              backbone=nn.Dense(7), heads={"a": nn.Dense(3), "b": nn.Dense(1)})),
          "per_task_reps": PerTaskReps, "two_column_stitch": CrossStitch}


def _setup(model, weighting_name="graddrop", grad_wrt="params"):
  return build.Setup(model, None, weighting.get(weighting_name), TASKS, None, grad_wrt)


def _state(model):
  params = jax.jit(model.init)(jax.random.PRNGKey(1), X)["params"]
  return train.TrainState(step=jnp.int32(0), params=params, model_state={}, opt_state=None,
                          rng=jax.random.PRNGKey(2), task_weights=jnp.zeros(2),
                          task_gram=jnp.zeros((2, 2)))


def _losses(model, params):
  return mj.losses.task_losses(TASKS, model.apply({"params": params}, X), LABELS)[0]


def _jacobian(model, params):
  """{leaf: [T, ...]}: jax.jacrev of the loss vector, the reference."""
  return jax.jit(jax.jacrev(lambda p: _losses(model, p)))(params)


def _task_gradients(setup, state):
  """The production path, jitted as in training (without its combining function)."""
  return jax.jit(lambda s: train._task_gradients(setup, s, X, LABELS, None)._replace(
      combine_shared=None))(state)


def _combined(setup, state, method, key):
  """(gradient, weights, Gram matrix) of `method` on the production path's per-task gradients
  (those `setup`'s method asks for: J, or the Gram matrix without it), jitted."""
  def run(s):
    got = train._task_gradients(setup, s, X, LABELS, None)
    inputs = weighting.make_inputs(got.losses, key=key)
    grads, weights, _, gram = gradients.apply_weighting(method, method.init(2), inputs, got)
    return grads, weights, gram
  return jax.jit(run)(state)


def _close(a, b):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-5, atol=1e-6), a, b)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_tasks_row_of_j_is_the_jacobian_of_its_loss_wrt_the_shared_params(name):
  model = MODELS[name]()
  setup, state = _setup(model), _state(model)
  got = _task_gradients(setup, state)
  owners = base.param_owners(model, state.params, NAMES)
  jacobian = _jacobian(model, state.params)
  shared, task_params = base.split_params(jacobian, owners)
  _close(got.task_grads, shared)
  flat = flax.traverse_util.flatten_dict(task_params)
  own_rows = {p: j[NAMES.index(owners[p])] for p, j in flat.items()}
  _close(got.head_grads, flax.traverse_util.unflatten_dict(own_rows))
  _close(got.losses, _losses(model, state.params))


def test_task_gates_inside_the_encoder_leave_the_dense_gram_path_exact():
  model = MODELS["per_task_reps"]()
  state = _state(model)
  got = _task_gradients(_setup(model, "mgda"), state)
  assert got.gram is not None
  owners = base.param_owners(model, state.params, NAMES)
  jacobian = _jacobian(model, state.params)
  shared, task_params = base.split_params(jacobian, owners)
  np.testing.assert_allclose(got.gram, weighting.gram_matrix(shared), rtol=1e-5, atol=1e-7)
  own = {p: j[NAMES.index(owners[p])] for p, j in flax.traverse_util.flatten_dict(
      task_params).items()}
  _close(got.head_grads, flax.traverse_util.unflatten_dict(own))


@pytest.mark.parametrize("name", ["hps", "per_task_reps"])
def test_rep_mode_rows_are_the_jacobian_wrt_the_representation(name):
  model = MODELS[name]()
  setup, state = _setup(model, grad_wrt="rep"), _state(model)
  got = _task_gradients(setup, state)
  variables = {"params": state.params}
  rep = model.apply(variables, X, method="encode")
  decode_losses = lambda r: mj.losses.task_losses(
      TASKS, model.apply(variables, base.per_task_reps(r, NAMES), method="decode"), LABELS)[0]
  _close(got.task_grads, jax.jit(jax.jacrev(decode_losses))(rep))


@pytest.mark.parametrize("grad_wrt", ["params", "rep"])
def test_weights_combine_into_the_gradient_of_the_weighted_loss(grad_wrt):
  model = MODELS["hps"]()
  setup, state = _setup(model, grad_wrt=grad_wrt), _state(model)
  method = weighting.get("manual", weights=(2.0, 0.5))
  grads, weights, gram = _combined(setup, state, method, jax.random.PRNGKey(0))
  np.testing.assert_allclose(weights, [2.0, 0.5])
  owners = base.param_owners(model, state.params, NAMES)
  weighted = jax.jit(jax.grad(lambda p: _losses(model, p) @ jnp.array([2.0, 0.5])))(state.params)
  unweighted = jax.jit(jax.grad(lambda p: _losses(model, p).sum()))(state.params)
  shared, task_params = base.split_params(grads, owners)
  _close(shared, base.split_params(weighted, owners)[0])  # the shared part: w^T J
  _close(task_params, base.split_params(unweighted, owners)[1])  # heads: their own, unweighted
  assert gram.shape == (2, 2) and np.all(np.diag(gram) > 0)


def test_gram_only_gives_the_gram_of_the_jacobian_without_building_it():
  model = MODELS["hps"]()
  state = _state(model)
  got = _task_gradients(_setup(model, "mgda"), state)
  assert got.gram is not None  # an all-Dense encoder: the dense-layer path
  owners = base.param_owners(model, state.params, NAMES)
  jacobian = base.split_params(_jacobian(model, state.params), owners)[0]
  np.testing.assert_allclose(got.gram, weighting.gram_matrix(jacobian), rtol=1e-5, atol=1e-7)
  full = _task_gradients(_setup(model, "graddrop"), state)
  assert full.gram is None  # a method that reads J itself gets J
  method = weighting.get("mgda")
  _close(_combined(_setup(model, "mgda"), state, method, jax.random.PRNGKey(0))[0],
         _combined(_setup(model, "graddrop"), state, method, jax.random.PRNGKey(0))[0])


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


def test_encoders_with_other_trainable_layers_need_the_jacobian():
  model = models.get("hps", TASKS, base.ModelSpec(backbone_spec=(4, "p")))
  x = jnp.ones((2, 8, 8, 3))
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  encode = lambda p: (model.apply({"params": {**params, **p}}, x, method="encode"), None)
  assert gradients.dense_taps(encode, {"backbone": params["backbone"]}) is None


def test_an_all_dense_encoder_is_tapped_at_every_dense_output():
  model = MODELS["hps"]()
  params = _state(model).params
  shared = {k: params[k] for k in model.shared_modules}
  encode = lambda p: (model.apply({"params": {**params, **p}}, X, method="encode"), None)
  taps = gradients.dense_taps(encode, shared)
  assert [t.shape for t in taps.zeros] == [(10, 8), (10, 6)] and taps.biases == [True, True]


def test_gradient_path_trains_exactly_like_the_loss_path(tmp_path, tiny_config, one_device):
  tiny_config.num_steps = tiny_config.log_every = tiny_config.eval_every = 50
  tiny_config.checkpoint_every = 50
  plain = mj.train_and_evaluate(tiny_config, str(tmp_path / "plain"), mesh=one_device)
  tiny_config.grad_diagnostics = True
  diagnosed = mj.train_and_evaluate(tiny_config, str(tmp_path / "diagnosed"), mesh=one_device)
  assert diagnosed == pytest.approx(plain, rel=1e-4, abs=1e-6)


def test_rep_mode_is_refused_for_methods_not_defined_on_representations(tiny_config):
  weighting.REGISTRY["_params_only"] = lambda: weighting.Weighting(
      lambda tasks: (), lambda state, inputs: (jnp.ones(3), state), needs="gram")
  try:
    tiny_config.weighting = "_params_only"
    tiny_config.weighting_kwargs = {"grad_wrt": "rep"}
    with pytest.raises(mj.ConfigError, match="not defined on representation gradients"):
      build.build_setup(mj.config.complete(tiny_config), mj.data.load(tiny_config.dataset).tasks)
  finally:
    del weighting.REGISTRY["_params_only"]


def test_rep_mode_is_refused_for_models_without_a_representation(tiny_config):
  tiny_config.weighting = "mgda"
  tiny_config.weighting_kwargs = {"grad_wrt": "rep"}
  with pytest.raises(mj.ConfigError, match="no encode/decode split"):
    build.build_setup(mj.config.complete(tiny_config), TASKS, model=CrossStitch())
