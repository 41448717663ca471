"""Saving user modules for `mj.load`: flax layers with jax's initializers pickle and come back
with the same initializers; what cannot be rebuilt still fails as `pickle` fails."""

import pickle
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import module_pickle

INITIALIZERS = {
    "lecun_normal": jax.nn.initializers.lecun_normal(),
    "he_uniform": jax.nn.initializers.he_uniform(in_axis=-1, out_axis=-2),
    "glorot_normal": jax.nn.initializers.glorot_normal(),
    "variance_scaling": jax.nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal"),
    "normal": jax.nn.initializers.normal(0.02),
    "uniform": jax.nn.initializers.uniform(0.1),
    "truncated_normal": jax.nn.initializers.truncated_normal(0.5),
    "constant": jax.nn.initializers.constant(3.0),
    "orthogonal": jax.nn.initializers.orthogonal(scale=2.0),
    "zeros": jax.nn.initializers.zeros,
}


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_each_initializer_comes_back_drawing_the_same_values(name):
  init = INITIALIZERS[name]
  loaded = pickle.loads(module_pickle.dumps(init))
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(loaded(key, (4, 6), jnp.float32), init(key, (4, 6), jnp.float32))


def test_a_closure_over_more_than_its_factorys_arguments_is_left_to_pickle():
  scale = 2.0
  assert module_pickle.initializer_arguments(lambda key, shape: scale) is None
  with pytest.raises((pickle.PicklingError, AttributeError)):
    module_pickle.dumps({"head": nn.Dense(3, kernel_init=lambda k, s, d: jnp.zeros(s, d))})


def test_heads_of_flax_layers_round_trip_and_initialise_identically():
  heads = {"digit": nn.Dense(10), "size": nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(1)])}
  loaded = pickle.loads(module_pickle.dumps(heads))
  x = jnp.ones((2, 5))
  for name, head in heads.items():
    original, back = (h.init(jax.random.PRNGKey(1), x) for h in (head, loaded[name]))
    jax.tree.map(np.testing.assert_array_equal, back, original)


@pytest.mark.slow
def test_a_run_with_dense_heads_loads_without_passing_them_again(tmp_path, tiny_config):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 6)).astype(np.float32)
  data = mj.from_arrays(x, {"sign": (x[:, 0] > 0).astype(np.int32), "size": x[:, 1]},
                        task_types={"sign": "classification", "size": "regression"})
  tiny_config.num_steps = tiny_config.log_every = tiny_config.checkpoint_every = 20
  heads = {"sign": nn.Dense(2), "size": nn.Dense(1)}
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # "cannot be saved" would be a warning
    mj.train_and_evaluate(tiny_config, str(tmp_path), data=data, heads=heads)
  frame = mj.load(tmp_path).predict(x[:4])
  assert list(frame.columns) == ["sign", "sign/0", "sign/1", "size"]
