"""Properties every weighting method in the registry shares (STYLE.md, "Tests").

For every name in `weighting.REGISTRY`, on T = 3 tasks with gradients J f32[3, 5]:
- the weights are f32[T] and finite on a zero, a rank-deficient (two identical task
  gradients), a tiny (1e-8) and a huge (1e8) Jacobian, over a few steps from a fresh state;
- a task with count 0 (zero gradient row, loss 0) gets weight exactly 0;
- permuting the tasks permutes the weights (same key, fresh state), where the method is
  permutation-equivariant (exceptions in NOT_EQUIVARIANT);
- every step under `jax.jit` equals the eager step, over a few steps from a fresh state, one of
  them with a task without labels (the only jit-vs-eager test of each registered method).
Method-specific values are pinned in each method's own tests/test_weighting_<name>.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting

NUM_TASKS = 3
J = np.array([[1.0, -2.0, 0.5, 0.0, 3.0],
              [0.5, 1.0, -1.0, 2.0, 0.0],
              [-1.5, 0.5, 2.0, 1.0, -0.5]], np.float32)
LOSSES = np.array([0.5, 1.0, 2.0], np.float32)
KPIS = np.array([0.6, 0.8, 0.3], np.float32)  # accuracies (every task is a classification)
COUNTS = np.array([4, 4, 4], np.int32)
STEPS = 3  # a few steps, so that stateful methods leave their first-step branch

# Hyper-parameters a method needs, or that bring its later phase within STEPS steps.
HYPERPARAMETERS = {
    "manual": {"weights": (1.0, 0.5, 2.0)},
    "dwa": {"window": 1},                           # ratio weights from step 2 on
    "stch": {"warmup_steps": 0, "nadir_steps": 1},  # STCH proper from step 1 on
}

# Methods whose weights do not follow a permutation of the tasks, and why.
NOT_EQUIVARIANT = {
    # The configured weights belong to task positions, not to the tasks' gradients or losses.
    "manual": "weights given per task position",
    # Random: the key's draw is indexed by task position (equivariant only in distribution).
    "rlw": "logits drawn per task position",
    "pcgrad": "each task's visiting order drawn from the key by its position",
    "gradvac": "each task's visiting order drawn from the key by its position",
}

DEGENERATE = {
    "zero": np.zeros_like(J),
    "rank_deficient": np.stack([J[0], J[0], J[2]]),  # two identical task gradients
    "tiny": 1e-8 * J,
    "huge": 1e8 * J,
}


def _method(name):
  """(the method, its update under one jax.jit, shared by every test of this method)."""
  make = weighting.REGISTRY[name]
  first = min(n for n, m in weighting.REGISTRY.items() if m is make)  # one jit per alias set
  return _build(first)




@functools.cache
def _build(name):
  method = weighting.get(name, **HYPERPARAMETERS.get(name, {}))
  return method, jax.jit(method.update)


def _init(method):
  """A fresh state; methods with gradient-shaped state get the shapes of J."""
  if method.grad_state:
    return method.init(NUM_TASKS, grads_like=J)
  return method.init(NUM_TASKS)


def _train_losses(params):
  return params["losses"] + params["grads"] @ params["p"]


def _val_losses(params):
  return params["losses"] + params["grads"] @ params["p"] / 2 + params["p"] @ params["p"] / 10


def _lookahead(grads, losses):
  """A model for the look-ahead methods (`val_batch`) whose parameters hold the case's J and
  L: at p = 0 the training losses are L and task i's gradient in p is row i of J."""
  return weighting.Lookahead({"p": jnp.zeros(J.shape[1]), "grads": jnp.asarray(grads, jnp.float32),
                              "losses": jnp.asarray(losses, jnp.float32)},
                             _train_losses, _val_losses)


def _inputs(grads=J, losses=LOSSES, counts=COUNTS, kpis=KPIS, step=0):
  return weighting.make_inputs(losses, counts, kpis, key=jax.random.PRNGKey(7), step=step,
                               grads=jnp.asarray(grads, jnp.float32),
                               lookahead=_lookahead(grads, losses))


def _weights(result):
  """The weights f32[T] of an update's result (a Direction carries them)."""
  return result.weights if isinstance(result, weighting.Direction) else result


def _run(update, method, inputs_per_step):
  """[(weights, result)] of each step from a fresh state."""
  state, out = _init(method), []
  for inputs in inputs_per_step:
    result, state = update(state, inputs)
    out.append((np.asarray(_weights(result)), result))
  return out


def _missing_task_1(step):
  """Inputs where task 1 has no labels: a zero gradient row, loss 0, count 0."""
  grads = J.copy()
  grads[1] = 0.0
  return _inputs(grads, LOSSES * [1, 0, 1], COUNTS * [1, 0, 1], KPIS * [1, 0, 1], step=step)


NAMES = sorted(weighting.REGISTRY)


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("name", NAMES)
def test_weights_are_finite_f32_per_task_on_degenerate_gradients(name, case):
  method, update = _method(name)
  steps = [_inputs(DEGENERATE[case], step=s) for s in range(STEPS)]
  for step, (weights, result) in enumerate(_run(update, method, steps)):
    assert weights.shape == (NUM_TASKS,) and weights.dtype == np.float32, (step, weights)
    assert np.isfinite(weights).all(), (step, weights)
    if isinstance(result, weighting.Direction):
      assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(result.grads)), step


@pytest.mark.parametrize("name", NAMES)
def test_a_task_without_labels_gets_weight_zero(name):
  """Task 1 has no labels at steps 0, 2 and 3 (zero gradient row, loss 0), labels at step 1."""
  method, update = _method(name)
  steps = [_missing_task_1(0), _inputs(step=1), _missing_task_1(2), _missing_task_1(3)]
  weights = [w for w, _ in _run(update, method, steps)]
  for step in (0, 2, 3):
    assert weights[step][1] == 0.0, (step, weights[step])
    assert np.isfinite(weights[step]).all(), (step, weights[step])


@pytest.mark.parametrize("name", [n for n in NAMES if n not in NOT_EQUIVARIANT])
def test_permuting_the_tasks_permutes_the_weights(name):
  method, update = _method(name)
  perm = np.array([2, 0, 1])
  # Distinct losses, KPIs and gradient norms, so that no tie hides a wrong permutation.
  steps = [_inputs(step=s) for s in range(2)]
  permuted = [_inputs(J[perm], LOSSES[perm], COUNTS[perm], KPIS[perm], step=s) for s in range(2)]
  for (weights, _), (permuted_weights, _) in zip(_run(update, method, steps),
                                                 _run(update, method, permuted)):
    np.testing.assert_allclose(permuted_weights, weights[perm], rtol=2e-4,
                               atol=2e-6 * np.abs(weights).max())


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager_at_every_step(name):
  """The weights (or Direction) and the new state, from the same state at each step."""
  method, update = _method(name)
  state = _init(method)
  for step, inputs in enumerate([_inputs(step=0), _missing_task_1(1), _inputs(step=2)]):
    jitted, eager = update(state, inputs), method.update(state, inputs)
    jax.tree.map(lambda a, b, step=step: np.testing.assert_allclose(
        a, b, rtol=1e-5, atol=1e-7, err_msg=f"step {step}"), jitted, eager)
    state = eager[1]


def test_the_tables_name_registered_methods():
  """A renamed or removed method must not leave a stale exception behind."""
  assert set(NOT_EQUIVARIANT) <= set(weighting.REGISTRY)
  assert set(HYPERPARAMETERS) <= set(weighting.REGISTRY)
