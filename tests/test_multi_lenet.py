"""MultiLeNet (`multi_lenet`), the MultiMNIST network of Sener and Koltun (NeurIPS 2018): the
PyTorch model's layers and size, dropout only in training, and a training step with every kind
of weighting method, MGDA-UB's representation mode included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import build, models, train
from mtl_jax.models import base
from mtl_jax.tasks import Task

TASKS = (Task("left", "classification", tuple(range(10))),
         Task("right", "classification", tuple(range(10))))
NAMES = ("left", "right")
X = jax.random.uniform(jax.random.PRNGKey(0), (6, 28, 28, 1))


def _model(**kwargs):
  return models.get("multi_lenet", TASKS, **kwargs)


def _params(model):
  return jax.jit(model.init)(jax.random.PRNGKey(1), X[:1])["params"]


def _size(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def test_the_parameters_are_the_pytorch_models_layer_by_layer():
  model = _model()
  params = _params(model)
  # MultiLeNetR: conv(1->10, 5x5), conv(10->20, 5x5), Linear(320->50); MultiLeNetO per task:
  # Linear(50->50), Linear(50->10). Weights and biases, counted by hand.
  shared = (1 * 25 * 10 + 10) + (10 * 25 * 20 + 20) + (320 * 50 + 50)
  head = (50 * 50 + 50) + (50 * 10 + 10)
  assert (shared, head) == (21_330, 3_060)
  owners = base.param_owners(model, params, NAMES)
  shared_params, task_params = base.split_params(params, owners)
  assert _size(shared_params) == shared
  assert {t: _size(task_params[f"head_{t}"]) for t in NAMES} == {"left": head, "right": head}
  assert _size(params) == 27_450
  assert jax.tree.map(jnp.shape, params["shared"]["fc"])["kernel"] == (320, 50)


def test_outputs_are_ten_logits_per_task_from_a_50_wide_shared_representation():
  model = _model()
  variables = {"params": _params(model)}
  out = model.apply(variables, X)
  assert {t: o.shape for t, o in out.items()} == {"left": (6, 10), "right": (6, 10)}
  z = model.apply(variables, X, method="encode")
  assert z.shape == (6, 50) and (z >= 0).all()  # after the ReLU
  decoded = model.apply(variables, base.per_task_reps(z, NAMES), method="decode")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), decoded, out)


def test_dropout_acts_only_in_training():
  model = _model()
  variables = {"params": _params(model)}
  run = jax.jit(lambda key, train: model.apply(variables, X, train=train,
                                                rngs={"dropout": key}), static_argnums=1)
  key_a, key_b = jax.random.PRNGKey(3), jax.random.PRNGKey(4)
  evaluation = model.apply(variables, X)  # no rng needed
  for key in (key_a, key_b):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7),
                 run(key, False), evaluation)
  a, b = run(key_a, True), run(key_b, True)
  assert not np.allclose(a["left"], b["left"]), "training draws a mask per key"
  assert not np.allclose(a["left"], evaluation["left"])
  without = _model(dropout=0.0)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6),
               without.apply(variables, X, train=True, rngs={"dropout": key_a}), evaluation)


def test_the_factory_refuses_what_the_fixed_network_cannot_use():
  with pytest.raises(ValueError, match="fixed layers"):
    _model(spec=base.ModelSpec(shared_layers=(256,)))
  with pytest.raises(ValueError, match="builds its own heads"):
    _model(spec=base.ModelSpec(heads={t: None for t in NAMES}))
  with pytest.raises(ValueError, match="dropout"):
    _model(dropout=1.0)


# One method of each kind, by what it reads: the losses, the per-task gradients of the shared
# parameters, and those of the shared representation (MGDA-UB). Methods that read only the Gram
# matrix take the parameter gradients' path too: the encoder has convolutions, so no Gram
# matrix comes without J (`mtl_jax.gradients.dense_gram`).
KINDS = {"losses": ("uncertainty", {}), "gradients": ("pcgrad", {}),
         "representation": ("mgda", {"grad_wrt": "rep"})}


@pytest.mark.parametrize("kind", KINDS)
def test_a_training_step_with_every_kind_of_method(kind):
  config = mj.config.complete(mj.default_config())
  config.model.name = "multi_lenet"
  config.model.backbone = config.model.shared_layers = config.model.task_layers = ()
  config.weighting, config.weighting_kwargs = KINDS[kind]
  setup = build.build_setup(config, TASKS, steps_per_epoch=10)
  assert setup.grad_wrt == {"losses": None, "representation": "rep"}.get(kind, "params")
  mesh = mj.sharding.make_mesh(jax.devices()[:1])
  batch = {"inputs": np.asarray(X), "labels": {"left": np.array([0, 1, 2, 3, 4, -1], np.int32),
                                               "right": np.array([5, 6, 7, 8, 9, 0], np.int32)}}

  @jax.jit
  def first_step(batch):
    state = train.create_train_state(setup, 0, batch["inputs"][:1], mesh)
    return state.params, train.train_step(setup, state, batch)

  before, (state, losses) = jax.device_get(first_step(batch))
  assert np.all(np.isfinite(losses)) and np.all(np.isfinite(state.task_weights))
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, state.params)
  assert all(jax.tree.leaves(moved)), "every parameter moves in one step"
