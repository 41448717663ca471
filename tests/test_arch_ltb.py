"""Learning to Branch (`ltb`): what the paper's tree computes, checked on tiny shapes.

Each child node reads a Gumbel-softmax sample over its parents' outputs while searching, the
argmax parent once the search is over (and at evaluation); the step counter that tells the two
apart lives in the model's own collection, advances once per training step and resumes from a
checkpoint.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import mtl_jax as mj
from mtl_jax import build, models, train
from mtl_jax.models import base, ltb
from mtl_jax.tasks import Task

TASKS = (Task("a", "classification", ("x", "y", "z")), Task("b", "regression"))
NAMES = ("a", "b")
X = jax.random.normal(jax.random.PRNGKey(0), (6, 5))
LABELS = {"a": jnp.array([0, 1, 2, -1, 0, 1]),
          "b": jnp.array([0.5, jnp.nan, 1.0, 2.0, 0.0, 1.0])}


def _model(shared=(6, 5), **hyperparameters):
  return models.get("ltb", TASKS, base.ModelSpec(shared_layers=shared, task_layers=(4,)),
                    **hyperparameters)


def _jit(fn):
  return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def _default_variables():
  """Variables of `_model()` (hyper-parameters other than the specs and `branches` leave them
  alike) with random, untied branching logits."""
  return _randomize(_jit(_model().init)(jax.random.PRNGKey(1), X))


def _randomize(variables, seed=0):
  variables = flax.core.unfreeze(variables)
  params, key = variables["params"], jax.random.PRNGKey(seed)
  for name in sorted(params):
    if name.startswith(("branch_", "leaf_")):
      key, sub = jax.random.split(key)
      params[name] = jax.random.normal(sub, params[name].shape)
  return variables


def _evaluate(model, variables, x=X):
  return _jit(lambda v: model.apply(v, x, train=False))(variables)


def _train_call(model, x=X, method=None):
  """jit(variables, counter value, dropout key or None) -> (outputs, the counter after) of one
  training call."""
  return _jit(_train_fn(model, x, method))


def _train_fn(model, x=X, method=None):
  """_train_call's function, unjitted."""
  def call(variables, step, rng):
    variables = {**variables, "branching": {"step": jnp.asarray(step, jnp.int32)}}
    rngs = None if rng is None else {"dropout": rng}
    out, state = model.apply(variables, x, train=True, rngs=rngs, mutable=["branching"],
                             method=method)
    return out, state["branching"]["step"]
  return call


def _close(a, b, **kw):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kw), a, b)


def test_the_spec_is_cut_into_tree_layers_at_each_width_or_residual_block():
  assert ltb.tree_layers((256,)) == ((256,),)
  assert ltb.tree_layers((256, "d", 128, "r")) == ((256, "d"), (128,), ("r",))
  assert ltb.tree_layers(("d", 8, "p")) == (("d", 8, "p"),)
  with pytest.raises(ValueError, match="shared_layers"):
    _model(shared=())


@pytest.mark.parametrize("key, value", [("branches", 0), ("search_steps", -1),
                                        ("warmup_steps", 2000), ("temperature", 0.0),
                                        ("final_temperature", -1.0), ("hard", "yes"),
                                        ("branches", 2.5)])
def test_bad_hyperparameters_are_value_errors_naming_the_key(key, value):
  with pytest.raises(ValueError, match=key):
    _model(**{key: value})
  with pytest.raises(ValueError, match="nodes"):
    _model(nodes=3)


def test_every_layer_has_branches_nodes_and_each_task_one_leaf_over_the_last_layer():
  model = _model(branches=3)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(1), X)["params"]
  assert params["layer_0"]["layers"]["dense_0"]["kernel"].shape == (3, 5, 6)   # stacked nodes
  assert params["layer_1"]["layers"]["dense_0"]["kernel"].shape == (3, 6, 5)
  assert params["branch_1"].shape == (3, 3) and params["leaf_a"].shape == (3,)
  owners = base.param_owners(model, params, NAMES)
  assert {p[0]: o for p, o in owners.items()} == {
      "layer_0": None, "layer_1": None, "branch_1": None, "leaf_a": "a", "leaf_b": "b",
      "head_a": "a", "head_b": "b"}
  assert _model().branches == len(TASKS)   # default: one node per task per layer, as LibMTL


def test_branching_probabilities_are_distributions_over_the_parents():
  model = _model()
  params = _default_variables()["params"]
  probs = ltb.branch_probabilities(model, params)
  assert probs["branch_1"].shape == (2, 2) and probs["leaves"].shape == (2, 2)
  for p in probs.values():
    assert np.all(np.asarray(p) >= 0)
    np.testing.assert_allclose(np.asarray(p).sum(-1), 1.0, rtol=1e-6)
  tree = ltb.parents(model, params)
  assert tree["layer_1"] == tuple(int(j) for j in np.argmax(params["branch_1"], -1))
  assert tree["a"] == int(np.argmax(params["leaf_a"]))


def test_a_sample_at_a_tiny_temperature_is_the_one_hot_argmax():
  logits = jax.random.normal(jax.random.PRNGKey(3), (4, 3))
  key = jax.random.PRNGKey(4)

  @_jit
  def samples(logits):
    hard = lambda l: ltb.branch_weights(l, tau=2.0, key=key, hard=True)
    soft = lambda l: ltb.branch_weights(l, tau=2.0, key=key, hard=False)
    probe = lambda f: jax.grad(lambda l: (f(l) * jnp.arange(3.0)).sum())(logits)
    return (jax.random.gumbel(key, (4, 3)),
            ltb.branch_weights(logits, tau=1e-4, key=key, hard=False),
            ltb.branch_weights(logits, tau=1e-4, hard=False), hard(logits), probe(hard),
            probe(soft))

  noise, cold, noiseless, hard, hard_grad, soft_grad = samples(logits)
  np.testing.assert_allclose(cold, jax.nn.one_hot(jnp.argmax(logits + noise, -1), 3), atol=1e-6)
  np.testing.assert_allclose(noiseless, jax.nn.one_hot(jnp.argmax(logits, -1), 3), atol=1e-6)
  # hard (straight-through): exactly one-hot forward, the soft sample's gradient backward
  np.testing.assert_array_equal(hard, jax.nn.one_hot(jnp.argmax(logits + noise, -1), 3))
  np.testing.assert_allclose(hard_grad, soft_grad, rtol=1e-6)
  assert np.any(hard_grad)


def test_the_temperature_decays_geometrically_over_the_search():
  tau = lambda s: float(ltb.temperature_at(s, temperature=4.0, final_temperature=0.25,
                                           warmup_steps=10, search_steps=30))
  assert tau(0) == tau(10) == 4.0
  np.testing.assert_allclose([tau(20), tau(30), tau(99)], [1.0, 0.25, 0.25], rtol=1e-6)


@pytest.mark.parametrize("hard", [True, False])
def test_at_temperature_to_zero_the_searching_model_computes_the_fixed_tree(hard):
  model = _model(temperature=1e-4, final_temperature=1e-4, hard=hard)
  variables = _default_variables()
  fixed = _evaluate(_model(), variables)
  searching, counter = _train_call(model)(variables, 0, None)   # no rng: no noise
  assert int(counter) == 1
  _close(searching, fixed, rtol=1e-5, atol=1e-6)


def test_the_sampled_tree_depends_on_the_rng_while_searching_and_not_after():
  model = _model(search_steps=3)
  variables = _default_variables()
  fixed = _evaluate(model, variables)
  call, raw = _train_call(model), _train_fn(model)
  samples = [call(variables, 0, jax.random.PRNGKey(k))[0]["a"] for k in range(8)]
  assert any(not np.allclose(samples[0], s) for s in samples[1:]), "the tree is sampled"
  step = 0
  for k in range(3):   # the search's three training calls, the counter threaded
    _, step = call(variables, step, jax.random.PRNGKey(k))
  assert int(step) == 3
  for k in range(4):
    after, _ = call(variables, step, jax.random.PRNGKey(k))
    _close(after, fixed, rtol=0, atol=0)
  grads = _jit(jax.grad(lambda p: raw(
      {**variables, "params": p}, 3, jax.random.PRNGKey(0))[0]["a"].sum()))(variables["params"])
  assert not np.any(grads["branch_1"]) and not np.any(grads["leaf_a"]), "the tree is fixed"


def test_while_searching_each_tasks_gradients_are_the_jacobian_of_its_loss():
  """The split path (encode, then decode with the counter threaded) against jacrev of the
  whole searching model: the straight-through gradients of the logits included, and a task's
  leaf logits shaping only its own representation."""
  model = _model()
  variables = _default_variables()
  setup = build.Setup(model, None, mj.weighting.get("graddrop"), TASKS, None, "params")
  state = train.TrainState(step=jnp.int32(0), params=variables["params"],
                           model_state={"branching": {"step": jnp.int32(0)}}, opt_state=None,
                           rng=jax.random.PRNGKey(2), task_weights=jnp.zeros(2),
                           task_gram=jnp.zeros((2, 2)))
  got = _jit(lambda s: train._task_gradients(setup, s, X, LABELS, None)._replace(
      combine_shared=None))(state)
  assert int(got.aux[2]["branching"]["step"]) == 1   # encode counts the call, decode keeps it
  call = _train_fn(model)
  losses = lambda p: mj.losses.task_losses(TASKS, call({"params": p}, 0, None)[0], LABELS)[0]
  jacobian = _jit(jax.jacrev(losses))(state.params)
  assert np.any(jacobian["branch_1"]) and np.any(jacobian["leaf_a"][0])
  owners = base.param_owners(model, state.params, NAMES)
  shared, task_params = base.split_params(jacobian, owners)
  _close(got.task_grads, shared, rtol=2e-5, atol=1e-6)
  own = {p: j[NAMES.index(owners[p])] for p, j in
         flax.traverse_util.flatten_dict(task_params).items()}
  _close(got.head_grads, flax.traverse_util.unflatten_dict(own), rtol=2e-5, atol=1e-6)
  np.testing.assert_array_equal(jacobian["leaf_a"][1], 0.0)   # task b does not read a's leaf


def test_images_branch_through_stacked_convolutions():
  images = jax.random.normal(jax.random.PRNGKey(5), (2, 8, 8, 3))
  model = _model(shared=(4, "p", 4), search_steps=5)
  variables = _jit(model.init)(jax.random.PRNGKey(1), images)
  assert variables["params"]["layer_0"]["layers"]["conv_0"]["kernel"].shape == (2, 3, 3, 3, 4)
  base.check_model(model, variables, jax.ShapeDtypeStruct(images.shape, images.dtype), NAMES)
  reps = jax.eval_shape(lambda v: model.apply(v, images, method="encode"), variables)
  assert {t: r.shape for t, r in reps.items()} == {"a": (2, 4, 4, 4), "b": (2, 4, 4, 4)}
  out, counter = _train_call(model, images)(variables, 0, jax.random.PRNGKey(0))
  assert out["a"].shape == (2, 3) and out["b"].shape == (2, 1) and int(counter) == 1
  assert np.all(np.isfinite(out["a"])) and np.all(np.isfinite(out["b"]))


@pytest.mark.slow
def test_a_stopped_run_resumes_the_search_exactly(tmp_path, tiny_config, one_device):
  """The counter advances once per training step, is checkpointed and restored: the search
  (here ending at step 15) resumes where it stopped."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  x, y = load_digits(return_X_y=True)
  data = mj.from_arrays(x[:300] / 16.0, {"a": y[:300] % 3, "b": y[:300] / 9.0},
                        task_types={"b": "regression"})
  config = mj.config.complete(tiny_config)
  config.model.name = "ltb"
  config.model.shared_layers = (8, 6)
  config.model.task_layers = (4,)
  config.model.kwargs = {"search_steps": 15, "warmup_steps": 2}
  config.steps_per_dispatch = config.log_every = config.eval_every = 10
  config.checkpoint_every = 10

  def run(workdir, steps):
    config.num_steps = steps
    return mj.train_and_evaluate(config, str(workdir), data=data, mesh=one_device)

  straight = run(tmp_path / "straight", 20)
  run(tmp_path / "stopped", 10)
  config.allow_config_change = True  # extending a run changes num_steps
  resumed = run(tmp_path / "stopped", 20)
  assert resumed == straight
  saved = ocp.CheckpointManager(str(tmp_path / "straight" / "checkpoints")).restore(
      20, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  assert int(saved["model_state"]["branching"]["step"]) == 20 == int(saved["step"])
