"""Every registered architecture, chosen by `config.model.name`, trains with every kind of
weighting method: one method per way a method reads the model (its losses, the Gram matrix of
the per-task gradients, the gradients themselves, and the gradients of the representation
where the model has one).

What each architecture computes is specified in its own test file (test_arch_*.py), and that its
per-task gradients are exact in test_gradients.py.
"""

import jax
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import build, models, train
from mtl_jax.tasks import Task

TASKS = (Task("a", "classification", ("x", "y", "z")), Task("b", "binary"),
         Task("c", "regression"))
RNG = np.random.default_rng(0)
BATCH = {"inputs": RNG.normal(size=(8, 6)).astype(np.float32),
         "labels": {"a": np.array([0, 1, 2, -1, 0, 1, 2, 0], np.int32),
                    "b": np.array([0, 1, 1, 0, -1, 1, 0, 1], np.int32),
                    "c": np.array([0.5, np.nan, 1.0, 2.0, 0.0, 1.0, np.nan, 0.3], np.float32)}}
# One method of each kind, and what it is given (gradient mode): `mgda` reads the Gram matrix,
# `graddrop` the per-task gradients themselves (needs="grads").
KINDS = {"losses": ("uncertainty", {}), "gram": ("mgda", {}), "gradients": ("graddrop", {}),
         "representation": ("mgda", {"grad_wrt": "rep"})}


def _config(architecture, method, kwargs):
  config = mj.config.complete(mj.default_config())
  config.model.name = architecture
  config.model.shared_layers = (8,)  # one stage or level: multi-stage ones in test_arch_*.py
  config.model.task_layers = (4,)
  config.weighting = method
  config.weighting_kwargs = kwargs
  return config


def _has_representation(architecture):
  return models.base.has_split(build.build_model(_config(architecture, "equal", {}), TASKS))


# `hps` trains with every registered method in test_train.py and test_contract.py; `multi_lenet`,
# a fixed network for 28x28 images, with every kind of method in test_multi_lenet.py.
ARCHITECTURES = sorted(set(models.spec_built()) - {"hps"})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_takes_a_step_with_every_kind_of_method(architecture, kind):
  if kind == "representation" and not _has_representation(architecture):
    pytest.skip(f"{architecture} has no representation shared by its heads")
  setup = build.build_setup(_config(architecture, *KINDS[kind]), TASKS, steps_per_epoch=10)
  mesh = mj.sharding.make_mesh(jax.devices()[:1])

  @jax.jit
  def first_step(batch):  # one program: the fresh state and the step from it
    state = train.create_train_state(setup, 0, BATCH["inputs"][:1], mesh)
    return state.params, train.train_step(setup, state, batch)

  before, (state, losses) = jax.device_get(first_step(BATCH))
  assert np.all(np.isfinite(losses)) and np.all(np.isfinite(state.task_weights))
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, state.params)
  assert np.mean(jax.tree.leaves(moved)) > 0.5, "most parameters move in one step"
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))


def test_only_cross_stitch_lacks_a_representation_for_the_representation_mode():
  without = {a for a in ARCHITECTURES if not _has_representation(a)}
  assert without == {"cross_stitch"}, "its columns mix inside the trunk, up to the heads"
