"""Any model meeting the contract (`mtl_jax.models.base`) trains with everything hard parameter
sharing trains with: every weighting method, the representation mode, gradient diagnostics,
exact resume, 8 devices, a frozen backbone, augmentation and the linear probe.

Models of each shape the contract allows are in contract_models.py; that the per-task gradients
of each are exact is tests/test_gradients.py's business.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import build, sharding, train, weighting
from mtl_jax.tasks import Task

from contract_models import CrossStitch, PerTaskReps, Regularized

TASKS = (Task("a", "classification", ("x", "y", "z")), Task("b", "regression"))
HYPERPARAMETERS = {"manual": {"weights": (1.0, 0.5)}}
RNG = np.random.default_rng(0)
BATCH = {"inputs": RNG.normal(size=(8, 5)).astype(np.float32),
         "labels": {"a": np.array([0, 1, 2, -1, 0, 1, 2, 0], np.int32),
                    "b": np.array([0.5, np.nan, 1.0, 2.0, 0.0, 1.0, np.nan, 0.3], np.float32)}}


def _config(name, **kwargs):
  config = mj.config.complete(mj.default_config())
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.0
  config.optimizer.learning_rate = 1.0
  config.weighting = name
  config.weighting_kwargs = {**HYPERPARAMETERS.get(name, {}), **kwargs}
  return config


def _one_step(model, name, **kwargs):
  mesh = sharding.make_mesh(jax.devices()[:1])
  setup = build.build_setup(_config(name, **kwargs), TASKS, model=model, steps_per_epoch=10)
  state = train.create_train_state(setup, 0, BATCH["inputs"][:1], mesh)
  before = jax.device_get(state.params)
  state, losses = train.make_step_fn(setup, mesh)(state, BATCH)
  return before, jax.device_get(state), np.asarray(losses)


def _assert_trained(before, state, losses):
  assert np.all(np.isfinite(losses)) and np.all(np.isfinite(state.task_weights))
  assert int(state.step) == 1
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, state.params)
  assert all(jax.tree.leaves(changed)), "every parameter (shared and per task) moves"


# A method meets the model only through the per-task gradients (`gradients.TaskGradients`)
# and, with `grad_state`, the shapes of the shared parameters; every method is checked on
# arbitrary Jacobians in test_weighting_properties.py. So one method per way of reading them:
# the losses (stateless, learnable), the Gram matrix (stateless, warm-started), the gradients
# (a Direction), gradient-shaped state (tracked, averaged, accumulated).
ONE_PER_INTERFACE = ("equal", "uncertainty", "mgda", "nash_mtl", "graddrop", "moco", "db_mtl",
                     "excess_mtl")


def test_the_interfaces_cover_every_kind_of_registered_method():
  context = {"steps_per_epoch": 10}
  kinds = {(m.needs, m.grad_state) for m in (
      weighting.get(n, context=context, **HYPERPARAMETERS.get(n, {})) for n in weighting.REGISTRY)}
  covered = {(m.needs, m.grad_state) for m in map(weighting.get, ONE_PER_INTERFACE)}
  assert kinds == covered


@pytest.mark.parametrize("name", ONE_PER_INTERFACE)
def test_every_kind_of_weighting_trains_a_model_without_encode_decode(name):
  _assert_trained(*_one_step(CrossStitch(), name))


@pytest.mark.parametrize("name", ["equal", "mgda", "graddrop", "moco", "uncertainty"])
def test_a_model_with_one_representation_per_task_trains_on_every_gradient_path(name):
  _assert_trained(*_one_step(PerTaskReps(), name))


@pytest.mark.parametrize("model", [PerTaskReps, lambda: mj.models.get("hps", TASKS)])
def test_the_representation_mode_runs_on_whatever_representation_the_model_has(model):
  _assert_trained(*_one_step(model(), "mgda", grad_wrt="rep"))


@pytest.mark.parametrize("name", ["equal", "mgda"])
def test_a_models_own_penalty_adds_its_gradient_to_the_weighted_one(name):
  before, plain, _ = _one_step(PerTaskReps(), name)
  _, regularized, _ = _one_step(Regularized(), name)
  model = Regularized()
  penalty = jax.grad(lambda p: model.apply({"params": p}, jnp.asarray(BATCH["inputs"]),
                                           method="regularizer"))(before)
  # Plain SGD with rate 1: the step is minus the gradient.
  jax.tree.map(lambda p, r, g: np.testing.assert_allclose(p - r, g, rtol=1e-4, atol=1e-6),
               plain.params, regularized.params, penalty)
  assert np.abs(jax.tree.leaves(penalty["gates_a"])[0]).max() > 0


def test_gradient_diagnostics_log_the_gram_matrix_of_a_model_without_encode_decode():
  mesh = sharding.make_mesh(jax.devices()[:1])
  config = _config("equal")
  config.grad_diagnostics = True
  setup = build.build_setup(config, TASKS, model=CrossStitch())
  state = train.create_train_state(setup, 0, BATCH["inputs"][:1], mesh)
  state, _ = train.make_step_fn(setup, mesh)(state, BATCH)
  scalars, cosines = mj.metrics.gradient_metrics(state.task_gram, TASKS)
  assert scalars["grad_norm/a"] > 0 and scalars["grad_norm/b"] > 0
  # Task t's loss reads row t of the stitch unit only: the two gradients are orthogonal.
  assert cosines[0, 1] == 0


def test_one_step_of_a_model_without_encode_decode_on_eight_devices_matches_one_device():
  steps = {}
  for devices in (1, 8):
    mesh = sharding.make_mesh(jax.devices()[:devices])
    setup = build.build_setup(_config("mgda"), TASKS, model=CrossStitch())
    state = train.create_train_state(setup, 0, BATCH["inputs"][:1], mesh)
    batch = sharding.put_global(BATCH, sharding.batch_sharding(mesh))
    steps[devices] = jax.device_get(train.make_step_fn(setup, mesh)(state, batch)[0])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               steps[1].params, steps[8].params)


def _digits_data():
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  x, y = load_digits(return_X_y=True)
  return mj.from_arrays(x[:600] / 16.0, {"a": y[:600] % 3, "b": (y[:600] / 9.0)},
                        task_types={"b": "regression"})


def test_a_user_model_resumes_exactly_from_its_checkpoint(tmp_path, tiny_config, one_device):
  tiny_config.weighting = "moco"
  tiny_config.num_steps = 20
  tiny_config.steps_per_dispatch = tiny_config.log_every = tiny_config.eval_every = 10
  tiny_config.checkpoint_every = 10
  data = _digits_data()
  run = lambda workdir, steps: mj.train_and_evaluate(
      _with_steps(tiny_config, steps), str(workdir), data=data, model=CrossStitch(),
      mesh=one_device)
  straight = run(tmp_path / "straight", 20)
  run(tmp_path / "stopped", 10)
  resumed = run(tmp_path / "stopped", 20)
  assert resumed == straight


def _with_steps(config, steps):
  config = mj.config.complete(config)
  config.num_steps = steps
  config.allow_config_change = True  # extending a run changes num_steps
  return config
