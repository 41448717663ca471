"""Layer specs and the hard-parameter-sharing model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from mtl_jax import models
from mtl_jax.tasks import Task

TASKS = (Task("digit", "classification", tuple("0123456789")),
         Task("parity", "classification", ("even", "odd")),
         Task("age", "regression"))


@pytest.mark.parametrize("spec, parsed", [
    ((256, "d", 128), (256, "d", 128)),
    ("64, p, r", (64, "p", "r")),
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
  outputs, rep = model.apply(_init(model, x), x)
  assert {k: v.shape for k, v in outputs.items()} == {
      "digit": (4, 10), "parity": (4, 2), "age": (4, 1)}
  assert rep.shape == (4, 16)


def test_each_head_has_its_own_hidden_layers_on_one_shared_trunk():
  model = models.HardParameterSharing(tasks=TASKS[:2], shared_layers=(16, "r"),
                                      task_layers=(8,))
  params = _init(model, jnp.ones((2, 5)))["params"]
  assert set(params) == {"shared", "head_digit", "head_parity", "out_digit", "out_parity"}
  assert set(params["shared"]) == {"dense_0", "residual_1"}


def test_dropout_is_active_only_in_training():
  model = models.HardParameterSharing(tasks=TASKS[:1], shared_layers=(64, "d"),
                                      dropout_rate=0.5)
  x = jnp.ones((2, 8))
  variables = _init(model, x)
  evals = [model.apply(variables, x)[0]["digit"] for _ in range(2)]
  assert jnp.array_equal(*evals)
  trains = [model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(k)})[0]
            ["digit"] for k in range(2)]
  assert not jnp.array_equal(*trains)


def test_image_specs_build_convs_pools_and_global_pooling():
  model = models.HardParameterSharing(tasks=TASKS[:2], backbone_spec=(8, "p"),
                                      shared_layers=(8, "r"), task_layers=(4, "p", "d"))
  x = jnp.ones((2, 16, 16, 3))
  variables = _init(model, x)
  outputs, rep = model.apply(variables, x)
  assert rep.shape == (2, 8, 8, 8)
  assert outputs["digit"].shape == (2, 10)
  assert variables["params"]["backbone"]["conv_0"]["kernel"].shape == (3, 3, 3, 8)


def test_pooling_a_vector_is_an_error_naming_the_layer():
  model = models.HardParameterSharing(tasks=TASKS[:1], shared_layers=(8, "p"))
  with pytest.raises(ValueError, match="'p'"):
    _init(model, jnp.ones((2, 4)))


def test_a_user_backbone_replaces_the_spec_built_one():
  class Backbone(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.relu(nn.Dense(100)(x))

  model = models.HardParameterSharing(tasks=TASKS[:2], backbone=Backbone())
  x = jnp.ones((3, 784))
  variables = _init(model, x)
  assert variables["params"]["backbone"]["Dense_0"]["kernel"].shape == (784, 100)
  outputs, rep = model.apply(variables, x)
  assert rep.shape == (3, 100) and outputs["parity"].shape == (3, 2)
