"""Backbones: (module, variables) pairs, saving and loading, shape checks, freezing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import build
from mtl_jax import sharding
from mtl_jax import train
from mtl_jax.models import backbones
from mtl_jax.tasks import Task


class ConvBatchNorm(nn.Module):
  """A user backbone with batch statistics (module level, so it pickles)."""
  features: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.features, (3, 3))(x)
    return nn.relu(nn.BatchNorm(use_running_average=not train)(x))


class Flatten(nn.Module):
  """A backbone tied to one input size: Dense on the flattened image."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(8)(x.reshape(len(x), -1))


def _init(module, shape=(1, 8, 8, 3)):
  return module.init(jax.random.PRNGKey(0), jnp.zeros(shape))


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_a_user_module_round_trips_through_save_and_load(tmp_path):
  module = ConvBatchNorm(features=6)
  variables = _init(module)
  mj.save_backbone(tmp_path / "bb", module, variables)
  loaded_module, loaded_variables = mj.load_backbone(tmp_path / "bb")
  assert loaded_module == module
  _assert_trees_equal(loaded_variables, jax.device_get(variables))


def test_a_spec_built_backbone_is_saved_as_its_spec(tmp_path):
  module = mj.models.SpecStack((4, "p", 8), dropout_rate=0.25)
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)
  mj.save_backbone(tmp_path / "bb", module, variables)
  assert not (tmp_path / "bb" / "module.pkl").exists()
  loaded_module, loaded_variables = mj.load_backbone(str(tmp_path / "bb"))
  assert loaded_module == module
  _assert_trees_equal(loaded_variables, jax.device_get(variables))


def test_loading_a_directory_without_a_backbone_is_a_config_error(tmp_path):
  with pytest.raises(mj.ConfigError, match="no saved backbone"):
    mj.load_backbone(tmp_path)


def test_every_form_of_fcn_resolves_to_a_module_and_variables(tmp_path):
  module = ConvBatchNorm()
  variables = _init(module)
  mj.save_backbone(tmp_path / "bb", module, variables)
  spec_module, spec_variables = backbones.resolve([8, "p", 16], dropout_rate=0.5)
  assert spec_module == mj.models.SpecStack((8, "p", 16), 0.5) and spec_variables is None
  for fcn in [(module, variables), str(tmp_path / "bb"), tmp_path / "bb"]:
    got_module, got_variables = backbones.resolve(fcn)
    assert got_module == module
    _assert_trees_equal(got_variables, jax.device_get(variables))
  with pytest.raises(mj.ConfigError, match="fcn must be"):
    backbones.resolve(42)


def test_feature_shape_is_what_the_backbone_outputs():
  assert backbones.feature_shape(mj.models.SpecStack((4, "p", 8, "p")), None,
                                 (16, 16, 3)) == (4, 4, 8)
  module = ConvBatchNorm()
  assert backbones.feature_shape(module, _init(module), (16, 16, 3)) == (16, 16, 4)


def test_an_input_the_backbone_cannot_take_is_a_one_line_config_error():
  module = Flatten()
  variables = _init(module, (1, 8, 8, 3))  # Dense kernel for 8x8x3 inputs
  with pytest.raises(mj.ConfigError, match=r"imshape/num_channels \(16, 16, 3\)") as error:
    backbones.feature_shape(module, variables, (16, 16, 3))
  assert "\n" not in str(error.value)
  with pytest.raises(mj.ConfigError, match=r"imshape/num_channels \(8, 8, 1\)"):
    backbones.feature_shape(ConvBatchNorm(), _init(ConvBatchNorm()), (8, 8, 1))


def test_a_pool_stack_that_shrinks_the_image_below_one_pixel_is_a_config_error():
  with pytest.raises(mj.ConfigError, match="larger imshape or fewer 'p' layers"):
    backbones.feature_shape(mj.models.SpecStack((4, "p", "p", "p")), None, (4, 4, 3))


def test_graft_and_split_move_the_backbone_subtree_between_variable_trees():
  model_variables = {"params": {"backbone": {"w": 1}, "shared": {"w": 2}},
                     "batch_stats": {"backbone": {"mean": 3}}}
  rest, backbone = backbones.split(model_variables)
  assert rest == {"params": {"shared": {"w": 2}}}
  assert backbone == {"params": {"w": 1}, "batch_stats": {"mean": 3}}
  assert backbones.graft(rest, backbone) == model_variables
  assert backbones.extract(model_variables) == backbone


def _batch_norm_setup(freeze: bool):
  tasks = (Task("a", "classification", (0, 1)),)
  config = mj.config.complete(mj.default_config())
  config.model.shared_layers, config.model.task_layers = (4,), ()
  config.model.train_backbone = not freeze
  return build.build_setup(config, tasks, backbone=ConvBatchNorm())


def _one_step(freeze: bool, backbone_variables):
  mesh = sharding.make_mesh(jax.devices()[:1])
  setup = _batch_norm_setup(freeze)
  inputs = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32)
  state = train.create_train_state(setup, 0, inputs[:1], mesh, backbone_variables)
  before = jax.device_get(state.variables)
  step = train.make_step_fn(setup, mesh)
  state, _ = step(state, {"inputs": inputs, "labels": {"a": np.arange(8, dtype=np.int32) % 2}})
  return state, before


def test_a_frozen_backbone_is_kept_out_of_the_params_and_never_changes():
  given = jax.device_get(_init(ConvBatchNorm()))
  state, _ = _one_step(freeze=True, backbone_variables=given)
  assert "backbone" not in state.params and "batch_stats" not in state.model_state
  _assert_trees_equal(jax.device_get(state.frozen), given)


def test_a_trainable_backbone_updates_its_params_and_batch_statistics():
  given = jax.device_get(_init(ConvBatchNorm()))
  state, _ = _one_step(freeze=False, backbone_variables=given)
  after = jax.device_get(backbones.extract(state.variables))
  for collection in ("params", "batch_stats"):
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), after[collection],
                           given[collection])
    assert all(jax.tree.leaves(changed)), collection
