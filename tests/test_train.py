"""The train loop: sharding, the Python API, final metrics, non-finite losses."""

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import data as data_lib
from mtl_jax import build
from mtl_jax import sharding
from mtl_jax import train


def test_digits_run_writes_final_metrics_and_tensorboard_files(tmp_path, tiny_config):
  final = mj.train_and_evaluate(tiny_config, str(tmp_path))
  on_disk = json.loads((tmp_path / "final_metrics.json").read_text())
  assert on_disk == pytest.approx(final)
  for split in ("val", "test"):
    for task in ("digit", "parity", "high"):
      assert {f"{split}/{task}/accuracy", f"{split}/{task}/loss"} <= set(final)
  assert final["weight/digit"] == final["weight/parity"] == 1.0
  assert final["test/digit/accuracy"] > 0.85 and final["test/parity/accuracy"] > 0.85
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["100", "200"]


def _one_step(config, devices):
  """Params after one train step of `config` on a mesh over `devices`."""
  mesh = sharding.make_mesh(devices)
  dataset = data_lib.load(config.dataset)
  setup = build.build_setup(config, dataset.tasks)
  state = train.create_train_state(setup, config.seed, dataset.train.inputs[:1], mesh)
  train_fn = train.make_train_fn(setup, mesh, on_device=True)
  source = data_lib.on_devices(dataset.train, mesh)
  index = data_lib.Sampler(len(dataset.train), config.batch_size, config.seed).indices([0])
  state, summary = train_fn(state, source, jax.device_put(index,
                                                          sharding.batch_sharding(mesh, 1)))
  return jax.device_get(state.params), jax.device_get(summary["loss"])


def test_one_step_on_eight_devices_matches_one_device(tiny_config):
  assert jax.device_count() == 8
  config = mj.config.complete(tiny_config)
  config.model.dropout_rate = 0.0
  params_1, loss_1 = _one_step(config, jax.devices()[:1])
  params_8, loss_8 = _one_step(config, jax.devices())
  np.testing.assert_allclose(loss_8, loss_1, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               params_8, params_1)


def test_host_pipeline_and_on_device_data_train_identically(tmp_path, tiny_config):
  tiny_config.num_steps = 50
  tiny_config.log_every = tiny_config.eval_every = tiny_config.checkpoint_every = 50
  on_device = mj.train_and_evaluate(tiny_config, str(tmp_path / "device"))
  tiny_config.dataset.data_on_device = False
  host = mj.train_and_evaluate(tiny_config, str(tmp_path / "host"))
  assert host == pytest.approx(on_device, rel=1e-5, abs=1e-6)


def test_course_notebook_model_in_a_few_lines(tmp_path):
  """backbone = Dense(100)+ReLU, heads of 10 and 2 classes, task weights 1.0 and 0.5."""
  digits = data_lib.load(mj.default_config().dataset)
  x, y = digits.train.inputs, digits.train.labels["digit"]

  class Backbone(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.relu(nn.Dense(100)(x))

  dataset = mj.from_arrays(x, {"digit": y, "parity": y % 2})
  config = mj.default_config()
  config.model.shared_layers = config.model.task_layers = ()
  config.task_weights = (1.0, 0.5)
  config.num_steps, config.eval_every, config.checkpoint_every = 300, 300, 300
  final = mj.train_and_evaluate(config, str(tmp_path), data=dataset, backbone=Backbone())
  assert final["weight/digit"] == 1.0 and final["weight/parity"] == 0.5
  assert final["test/digit/accuracy"] > 0.9


def _first_step_sampling(sampler, row):
  steps = sampler.indices(range(sampler.steps_per_epoch))
  return int(np.argwhere(steps == row)[0, 0])


def test_non_finite_loss_stops_naming_step_and_task_and_keeps_checkpoints(tmp_path):
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(400, 4)).astype(np.float32)
  value = inputs.sum(1)
  sign = np.where(value > 0, "pos", "neg").astype(object)
  sampler = data_lib.Sampler(400, 8, seed=0)
  bad_row = next(r for r in range(400) if 20 <= _first_step_sampling(sampler, r) < 40)
  bad_step = _first_step_sampling(sampler, bad_row)
  value[bad_row] = np.inf
  dataset = mj.from_arrays(inputs, {"sign": sign, "value": value},
                           task_types={"value": "regression"},
                           val=(inputs[:16], {"sign": sign[:16], "value": inputs[:16].sum(1)}),
                           test=(inputs[:16], {"sign": sign[:16], "value": inputs[:16].sum(1)}))
  config = mj.default_config()
  config.batch_size, config.eval_batch_size, config.num_steps = 8, 16, 100
  config.steps_per_dispatch = config.checkpoint_every = config.log_every = 10
  with pytest.raises(mj.NonFiniteLossError, match=rf"step {bad_step} in task\(s\) \['value'\]"):
    mj.train_and_evaluate(config, str(tmp_path), data=dataset)
  saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert saved and max(saved) == bad_step // 10 * 10
  assert not (tmp_path / "final_metrics.json").exists()


def test_dispatches_end_on_every_logging_evaluation_and_checkpoint_step():
  assert train.dispatch_chunks(0, 10, 4, (5,)) == [(0, 4), (4, 1), (5, 4), (9, 1)]
  # a resumed run replays exactly the chunks of the uninterrupted one
  assert train.dispatch_chunks(5, 10, 4, (5,)) == train.dispatch_chunks(0, 10, 4, (5,))[2:]


def _resume_config(name):
  """A small digits run with `name`'s weighting (`<method>+log`: on log losses) and 40% of the
  labels missing."""
  config = mj.default_config()
  config.model.shared_layers, config.model.task_layers = (8,), ()  # little to compile
  config.dataset.missing_fraction = 0.4
  config.weighting = name.removesuffix("+log")
  config.weighting_kwargs = {"manual": {"weights": (1.0, 0.5, 0.5)}}.get(name, {})
  if name.endswith("+log"):
    config.weighting_kwargs = {"log_losses": True}
  return mj.config.complete(config)


@functools.cache
def _fresh_state_of_equal_weighting():
  """create_train_state's fresh state of the run, built once: the model's init compiles for most
  of a second, and is the same whatever the weighting."""
  config = _resume_config("equal")
  dataset = data_lib.load(config.dataset)
  setup = build.build_setup(config, dataset.tasks)
  return train.create_train_state(setup, config.seed, dataset.train.inputs[:1],
                                  sharding.make_mesh(jax.devices()[:1]))


def _fresh_state(setup, mesh):
  """The fresh state of the run with `setup`'s weighting: its state from its own init, as
  create_train_state makes it, in fresh buffers (a train step donates its state)."""
  fresh = _fresh_state_of_equal_weighting()
  shapes = train._state_shapes(setup, fresh.params)  # pylint: disable=protected-access
  weighting_state = setup.weighting.init(setup.tasks, **shapes)
  fresh = fresh.replace(opt_state=fresh.opt_state._replace(weighting=weighting_state))
  return jax.device_put(jax.tree.map(jnp.array, fresh), sharding.replicated(mesh))


def _train_chunk(train_fn, state, source, sampler, first, length, mesh, *val):
  xs = jax.device_put(sampler.indices(range(first, first + length)),
                      sharding.batch_sharding(mesh, 1))
  return train_fn(state, source, xs, *val)[0]


# Every registered method, and one on log losses (log_losses=True wraps any gradient method).
@pytest.mark.parametrize("name", sorted(mj.weighting.REGISTRY) + ["cagrad+log"])
def test_a_restored_checkpoint_continues_exactly_for_every_weighting(tmp_path, name):
  """State saved at step 10 and restored, weighting state included, continues bit for bit.

  The two end-to-end resumes (a run killed, or stopped by SIGTERM, then rerun) are in
  test_resume.py; here, the train state of every method through the Checkpointer.
  """
  from mtl_jax import checkpoint  # pylint: disable=import-outside-toplevel
  config = _resume_config(name)
  mesh = sharding.make_mesh(jax.devices()[:1])
  dataset = data_lib.load(config.dataset)
  sampler = data_lib.Sampler(len(dataset.train), 32, config.seed)
  setup = build.build_setup(config, dataset.tasks, steps_per_epoch=sampler.steps_per_epoch)
  train_fn = train.make_train_fn(setup, mesh, on_device=True)
  source = data_lib.on_devices(dataset.train, mesh)
  # the validation split, for methods that draw look-ahead batches from it
  val = (data_lib.on_devices(dataset.val, mesh),) if setup.weighting.val_batch else ()
  middle = _train_chunk(train_fn, _fresh_state(setup, mesh), source, sampler, 0, 10, mesh, *val)
  checkpoints = checkpoint.Checkpointer(str(tmp_path), keep=1)
  checkpoints.save(10, middle, {"tasks": []})
  checkpoints.wait()
  full = _train_chunk(train_fn, middle, source, sampler, 10, 10, mesh, *val)
  restored = checkpoints.restore(full, {"tasks": []})  # `full` gives only shapes and shardings
  checkpoints.close()
  full = jax.device_get(full)
  resumed = jax.device_get(_train_chunk(train_fn, restored, source, sampler, 10, 10, mesh, *val))
  assert int(resumed.step) == 20
  jax.tree.map(np.testing.assert_array_equal, resumed, full)


def test_a_dispatch_of_one_step_trains_as_the_steps_of_a_scan():
  """K = 1 runs the step without `lax.scan` (see make_train_fn): the same steps either way."""
  config = _resume_config("equal")
  mesh = sharding.make_mesh(jax.devices()[:1])
  dataset = data_lib.load(config.dataset)
  sampler = data_lib.Sampler(len(dataset.train), 32, config.seed)
  setup = build.build_setup(config, dataset.tasks)
  train_fn = train.make_train_fn(setup, mesh, on_device=True)
  source = data_lib.on_devices(dataset.train, mesh)
  scanned = _train_chunk(train_fn, _fresh_state(setup, mesh), source, sampler, 0, 2, mesh)
  one_by_one = _fresh_state(setup, mesh)
  for step in range(2):
    one_by_one = _train_chunk(train_fn, one_by_one, source, sampler, step, 1, mesh)
  assert int(one_by_one.step) == int(scanned.step) == 2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               jax.device_get(one_by_one), jax.device_get(scanned))


def _image_step(devices):
  """(state, losses) after one make_step_fn step of a small convnet on a mesh over `devices`;
  task "b" is labelled in every fourth row only."""
  tasks = (mj.Task("a", "classification", (0, 1, 2)), mj.Task("b", "classification", (0, 1)))
  config = mj.config.complete(mj.default_config())
  config.model.backbone, config.model.shared_layers, config.model.task_layers = (4, "p"), (), ()
  config.weighting = "uncertainty"
  setup = build.build_setup(config, tasks)
  mesh = sharding.make_mesh(devices)
  state = train.create_train_state(setup, 0, np.zeros((1, 8, 8, 3), np.float32), mesh)
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
  labels = {"a": rng.integers(0, 3, 16).astype(np.int32),
            "b": np.where(np.arange(16) % 4 == 0, rng.integers(0, 2, 16), -1).astype(np.int32)}
  return train.make_step_fn(setup, mesh)(state, {"inputs": inputs, "labels": labels})


def test_the_host_fed_image_step_gives_the_same_update_on_eight_devices_as_on_one():
  one_state, one_losses = _image_step(jax.devices()[:1])
  eight_state, eight_losses = _image_step(jax.devices()[:8])
  np.testing.assert_allclose(eight_losses, one_losses, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               jax.device_get(eight_state.params), jax.device_get(one_state.params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               jax.device_get(eight_state.opt_state), jax.device_get(one_state.opt_state))
