"""Layer specs, the model contract (`mtl_jax.models.base`), the registry and hard sharing."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import build, models
from mtl_jax.models import base
from mtl_jax.tasks import Task

TASKS = (Task("digit", "classification", tuple("0123456789")),
         Task("parity", "classification", ("even", "odd")),
         Task("age", "regression"))


@pytest.mark.parametrize("spec, parsed", [
    ((256, "d", 128), (256, "d", 128)),
    ("64, p, r", (64, "p", "r")),
    (("8,p",), (8, "p")),  # how the CLI's --config.model.backbone=8,p reaches a tuple field
    ([], ()),
    (None, ()),
])
def test_parse_spec_accepts_ints_tokens_and_strings(spec, parsed):
  assert models.parse_spec(spec) == parsed


@pytest.mark.parametrize("spec, message", [
    ((0,), "positive"), (("x",), "unknown layer 'x'"), ((1.5,), "neither"), ((True,), "neither")])
def test_parse_spec_names_the_bad_entry(spec, message):
  with pytest.raises(ValueError, match=message):
    models.parse_spec(spec)


def _init(model, x):
  return model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x)


def test_output_sizes_are_inferred_from_the_tasks():
  model = models.HardParameterSharing(tasks=TASKS, backbone_spec=(32,), shared_layers=(16,),
                                      task_layers=(8, "d"), dropout_rate=0.5)
  x = jnp.ones((4, 64))
  variables = _init(model, x)
  outputs = model.apply(variables, x)
  assert {k: v.shape for k, v in outputs.items()} == {
      "digit": (4, 10), "parity": (4, 2), "age": (4, 1)}
  assert model.apply(variables, x, method="encode").shape == (4, 16)


def test_each_head_has_its_own_hidden_layers_on_one_shared_trunk():
  model = models.HardParameterSharing(tasks=TASKS[:2], shared_layers=(16, "r"),
                                      task_layers=(8,))
  params = _init(model, jnp.ones((2, 5)))["params"]
  assert set(params) == {"shared", "head_digit", "head_parity"}
  assert set(params["shared"]) == {"dense_0", "residual_1"}
  assert set(params["head_digit"]) == {"layers", "out"}
  owners = base.param_owners(model, params, ("digit", "parity"))
  assert {p[0]: o for p, o in owners.items()} == {
      "shared": None, "head_digit": "digit", "head_parity": "parity"}


def test_decode_of_encode_is_the_whole_model():
  model = models.HardParameterSharing(tasks=TASKS, backbone_spec=(8,), shared_layers=(6,),
                                      task_layers=(4,))
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 5))
  variables = _init(model, x)
  rep = model.apply(variables, x, method="encode")
  split = model.apply(variables, base.per_task_reps(rep, [t.name for t in TASKS]),
                      method="decode")
  jax.tree.map(np.testing.assert_array_equal, split, model.apply(variables, x))


def test_dropout_is_active_only_in_training():
  model = models.HardParameterSharing(tasks=TASKS[:1], shared_layers=(64, "d"),
                                      dropout_rate=0.5)
  x = jnp.ones((2, 8))
  variables = _init(model, x)
  evals = [model.apply(variables, x)["digit"] for _ in range(2)]
  assert jnp.array_equal(*evals)
  trains = [model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(k)})
            ["digit"] for k in range(2)]
  assert not jnp.array_equal(*trains)


def test_image_specs_build_convs_pools_and_global_pooling():
  model = models.HardParameterSharing(tasks=TASKS[:2], backbone_spec=(8, "p"),
                                      shared_layers=(8, "r"), task_layers=(4, "p", "d"))
  x = jnp.ones((2, 16, 16, 3))
  variables = _init(model, x)
  assert model.apply(variables, x, method="encode").shape == (2, 8, 8, 8)
  assert model.apply(variables, x)["digit"].shape == (2, 10)
  assert base.features(model, variables, x).shape == (2, 8)  # pooled for a probe
  assert variables["params"]["backbone"]["conv_0"]["kernel"].shape == (3, 3, 3, 8)


def test_pooling_a_vector_is_an_error_naming_the_layer():
  model = models.HardParameterSharing(tasks=TASKS[:1], shared_layers=(8, "p"))
  with pytest.raises(ValueError, match="'p'"):
    _init(model, jnp.ones((2, 4)))


class Backbone(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Dense(100)(x))


def test_a_user_backbone_replaces_the_spec_built_one():
  model = models.HardParameterSharing(tasks=TASKS[:2], backbone=Backbone())
  x = jnp.ones((3, 784))
  variables = _init(model, x)
  assert variables["params"]["backbone"]["Dense_0"]["kernel"].shape == (784, 100)
  assert model.apply(variables, x, method="encode").shape == (3, 100)
  assert model.apply(variables, x)["parity"].shape == (3, 2)


def test_user_heads_read_the_shared_representation_and_belong_to_their_task():
  model = models.get("hps", TASKS[:2], base.ModelSpec(
      backbone=Backbone(), heads={"parity": nn.Dense(2), "digit": nn.Dense(10)}))
  x = jnp.ones((3, 784))
  params = _init(model, x)["params"]
  assert set(params) == {"backbone", "heads_digit", "heads_parity"}
  assert params["heads_digit"]["kernel"].shape == (100, 10)  # no layer added between
  owners = base.param_owners(model, params, ("digit", "parity"))
  assert owners[("heads_parity", "kernel")] == "parity" and owners[("backbone", "Dense_0",
                                                                     "kernel")] is None


def test_heads_must_name_exactly_the_tasks():
  with pytest.raises(ValueError, match="heads are given for"):
    models.get("hps", TASKS[:2], base.ModelSpec(heads={"digit": nn.Dense(10)}))


def test_models_are_found_by_name_and_unknown_names_are_listed():
  assert isinstance(models.get("hps", TASKS), models.HardParameterSharing)
  with pytest.raises(ValueError, match="unknown model 'nope'; known: .*hps"):
    models.get("nope", TASKS)


class Unowned(nn.Module):
  shared_modules = ("trunk",)

  @nn.compact
  def __call__(self, x, *, train=False):
    h = nn.Dense(4, name="trunk")(x)
    return {"digit": nn.Dense(10, name="out_digit")(h), "parity": nn.Dense(2, name="mystery")(h)}


class Undeclared(nn.Module):
  @nn.compact
  def __call__(self, x, *, train=False):
    return {"digit": nn.Dense(10)(x), "parity": nn.Dense(2)(x)}


class WrongTasks(nn.Module):
  shared_modules = ()

  @nn.compact
  def __call__(self, x, *, train=False):
    return {"digit": nn.Dense(10, name="out_digit")(x)}


@pytest.mark.parametrize("model, message", [
    (Unowned(), "'mystery/bias' is neither in shared_modules"),
    (Undeclared(), "declares neither `shared_modules` nor `owner"),
    (WrongTasks(), "must return {task: output} for the tasks"),
])
def test_a_model_breaking_the_contract_is_named_before_training(model, message, tiny_config):
  setup = build.build_setup(mj.config.complete(tiny_config), TASKS[:2], model=model)
  with pytest.raises(mj.ConfigError, match=re.escape(message)):
    build.check_model(setup, np.zeros((1, 5), np.float32))


def test_a_task_parameter_is_found_by_its_name_suffix():
  class Towers(nn.Module):
    shared_modules = ("bottom",)

  assert base.owner_of(Towers(), ("tower_digit", "kernel"), ("digit", "parity")) == "digit"
  assert base.owner_of(Towers(), ("bottom", "kernel"), ("digit", "parity")) is None
  assert base.owner_of(Towers(), ("a_b", "x"), ("b", "a_b")) == "a_b"  # the longest match


def test_config_model_name_and_kwargs_build_a_registered_model(tiny_config):
  def towers(tasks, spec, width=4):
    base.refuse_modules(spec, "towers", "backbone", "heads")
    return Towers(tuple(t.name for t in tasks), width)

  class Towers(nn.Module):
    names: tuple
    width: int
    shared_modules = ("bottom",)

    @nn.compact
    def __call__(self, x, *, train=False):
      z = nn.Dense(self.width, name="bottom")(x)
      return {t: nn.Dense(2, name=f"tower_{t}")(z) for t in self.names}

  models.REGISTRY["towers"] = towers
  try:
    tiny_config.model.name = "towers"
    tiny_config.model.kwargs = {"width": 7}
    setup = build.build_setup(mj.config.complete(tiny_config), TASKS[1:2])
    assert setup.model.width == 7
    tiny_config.model.kwargs = {"depth": 7}
    with pytest.raises(mj.ConfigError, match="config.model: model 'towers': .*'depth'"):
      build.build_setup(mj.config.complete(tiny_config), TASKS[1:2])
    tiny_config.model.kwargs = {}
    with pytest.raises(mj.ConfigError, match="model 'towers' builds its own backbone"):
      build.build_setup(mj.config.complete(tiny_config), TASKS[1:2], backbone=Backbone())
  finally:
    del models.REGISTRY["towers"]
  tiny_config.model.name = "nope"
  with pytest.raises(mj.ConfigError, match="unknown config.model.name 'nope'"):
    mj.config.validate(mj.config.complete(tiny_config), num_devices=1)
