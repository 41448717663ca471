"""Masked per-task losses: missing labels contribute nothing, empty tasks give 0, not NaN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses, metrics, models
from mtl_jax.tasks import Task

DIGIT = Task("digit", "classification", tuple(str(i) for i in range(10)))
VALUE = Task("value", "regression")


def _model_and_params(tasks, dim=6):
  model = models.HardParameterSharing(tasks=tasks, shared_layers=(8,), task_layers=(4,))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, dim)))["params"]
  return model, params


@functools.partial(jax.jit, static_argnums=(0, 4))
def _total_loss(model, params, inputs, labels, tasks):
  outputs = model.apply({"params": params}, inputs)
  task_loss, _ = losses.task_losses(tasks, outputs, labels)
  return task_loss.sum()


_grad = jax.jit(jax.grad(_total_loss, argnums=1), static_argnums=(0, 4))


def test_cross_entropy_averages_over_labelled_examples_only():
  logits = jnp.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
  task = Task("t", "classification", ("a", "b"))
  loss, count = losses.task_losses([task], {"t": logits}, {"t": jnp.array([0, -1, 1])})
  expected = -(jax.nn.log_softmax(logits[0])[0] + jax.nn.log_softmax(logits[2])[1]) / 2
  np.testing.assert_allclose(loss[0], expected, rtol=1e-6)
  assert int(count[0]) == 2


def test_squared_error_ignores_nan_labels():
  values = jnp.array([[1.0], [5.0], [-2.0]])
  loss, count = losses.task_losses([VALUE], {"value": values},
                                   {"value": jnp.array([3.0, jnp.nan, 0.0])})
  np.testing.assert_allclose(loss[0], ((1 - 3) ** 2 + (-2 - 0) ** 2) / 2)
  assert int(count[0]) == 2


@pytest.mark.parametrize("task", [DIGIT, VALUE], ids=["classification", "regression"])
def test_task_without_labels_has_loss_zero_not_nan(task):
  output = jnp.ones((4, task.output_size))
  missing = jnp.full((4,), -1) if task.is_classification else jnp.full((4,), jnp.nan)
  loss, count = losses.task_losses([task], {task.name: output}, {task.name: missing})
  assert float(loss[0]) == 0.0 and int(count[0]) == 0


def test_missing_labels_leave_their_head_gradient_exactly_zero():
  tasks = (DIGIT, VALUE)
  model, params = _model_and_params(tasks)
  inputs = jax.random.normal(jax.random.PRNGKey(1), (5, 6))
  labels = {"digit": jnp.array([1, 2, 3, 4, 5]), "value": jnp.full((5,), jnp.nan)}
  grads = _grad(model, params, inputs, labels, tasks)
  assert all(bool((g == 0).all()) for g in jax.tree.leaves(grads["head_value"]))
  assert any(bool((g != 0).any()) for g in jax.tree.leaves(grads["head_digit"]["out"]))


def test_missing_labels_give_the_gradient_of_the_labelled_subset():
  tasks = (DIGIT, VALUE)
  model, params = _model_and_params(tasks)
  inputs = jax.random.normal(jax.random.PRNGKey(2), (6, 6))
  labels = {"digit": jnp.array([1, -1, 3, -1, 5, 7]),
            "value": jnp.array([0.5, 1.0, jnp.nan, 2.0, jnp.nan, -1.0])}
  grads = _grad(model, params, inputs, labels, tasks)
  for task, rows in ((DIGIT, [0, 2, 4, 5]), (VALUE, [0, 1, 3, 5])):
    sub = _grad(
        model, params, inputs[jnp.array(rows)],
        {task.name: labels[task.name][jnp.array(rows)]}, (task,))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 grads[f"head_{task.name}"], sub[f"head_{task.name}"])


def test_regression_learns_a_synthetic_target():
  """Squared error trains: a head fitted by gradient descent reaches a small MAE."""
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(256, 6)).astype(np.float32)
  target = inputs @ rng.normal(size=6).astype(np.float32)
  target[::4] = np.nan  # a quarter missing
  model, params = _model_and_params((VALUE,))
  labels = {"value": jnp.asarray(target)}
  loss_and_grad = jax.jit(jax.value_and_grad(
      lambda p: _total_loss(model, p, inputs, labels, (VALUE,))))
  first, _ = loss_and_grad(params)
  for _ in range(300):
    loss, grads = loss_and_grad(params)
    params = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
  assert float(loss) < 0.05 * float(first)
  outputs = model.apply({"params": params}, inputs)
  result = metrics.compute(losses.task_metrics((VALUE,), outputs, labels), "train")
  assert set(result) == {"train/value/loss", "train/value/mae", "train/value/rmse"}
  assert result["train/value/mae"] < 0.3 * np.nanmean(np.abs(target))


def test_metrics_are_masked_like_the_losses():
  task = Task("t", "classification", ("a", "b"))
  logits = jnp.array([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
  labels = jnp.array([0, 1, -1, -1])  # one right, one wrong, two missing
  result = metrics.compute(losses.task_metrics([task], {"t": logits}, {"t": labels}), "val")
  assert result["val/t/accuracy"] == pytest.approx(0.5)


def test_kpis_are_masked_accuracy_and_mean_absolute_error():
  task = Task("t", "classification", ("a", "b"))
  kpis = losses.task_kpis(
      (task, VALUE, DIGIT),
      {"t": jnp.array([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]]),
       "value": jnp.array([[1.0], [2.0], [9.0]]), "digit": jnp.zeros((3, 10))},
      {"t": jnp.array([0, 1, -1]), "value": jnp.array([2.0, 4.0, jnp.nan]),
       "digit": jnp.full((3,), -1)})
  np.testing.assert_allclose(kpis, [0.5, 1.5, 0.0])


# ----------------------------------------------------------------------------------------------
# Kinds, losses by name or callable, element-wise masks.

SMILING = Task("smiling", "binary")


def test_binary_cross_entropy_by_hand_over_the_labelled_logits():
  logits = jnp.array([[2.0], [-1.0], [0.5], [30.0]])
  loss, count = losses.task_losses([SMILING], {"smiling": logits},
                                   {"smiling": jnp.array([1, 0, -1, 0])})
  # -log sigmoid(2) - log(1 - sigmoid(-1)) + [-log(1 - sigmoid(30)) = 30, stable], over 3.
  expected = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0)) + 30.0 + np.log1p(np.exp(-30))) / 3
  np.testing.assert_allclose(loss[0], expected, rtol=1e-6)
  assert int(count[0]) == 3


@pytest.mark.parametrize("name, expected", [
    ("mse", (0.5 ** 2 + 3.0 ** 2) / 2),
    ("l1", (0.5 + 3.0) / 2),
    ("huber", (0.5 * 0.5 ** 2 + (3.0 - 0.5)) / 2),  # quadratic below delta 1, linear above
])
def test_regression_losses_by_name(name, expected):
  task = Task("y", "regression", loss=name)
  loss, _ = losses.task_losses([task], {"y": jnp.array([[0.0], [3.0], [7.0]])},
                               {"y": jnp.array([0.5, 0.0, jnp.nan])})
  np.testing.assert_allclose(loss[0], expected, rtol=1e-6)


def test_a_half_masked_two_wide_label_averages_over_its_labelled_elements():
  task = Task("v", "regression", label_shape=(2,))
  outputs = jnp.array([[1.0, 9.0], [9.0, 2.0], [0.0, 0.0]])
  labels = jnp.array([[0.0, jnp.nan], [jnp.nan, 0.0], [3.0, 4.0]])
  loss, count = losses.task_losses([task], {"v": outputs}, {"v": labels})
  assert int(count[0]) == 4  # labelled elements, not examples
  np.testing.assert_allclose(loss[0], (1 + 4 + 9 + 16) / 4)
  result = metrics.compute(losses.task_metrics([task], {"v": outputs}, {"v": labels}), "val")
  assert result["val/v/mae"] == pytest.approx((1 + 2 + 3 + 4) / 4)
  assert result["val/v/rmse"] == pytest.approx(np.sqrt(30 / 4))


def test_per_pixel_classification_masks_each_pixel():
  task = Task("seg", classes=("bg", "fg"), label_shape=(2, 2))
  logits = jnp.zeros((1, 2, 2, 2)).at[0, :, 0, 1].set(4.0)  # pixels (0, 0), (1, 0) say fg
  labels = jnp.array([[[1, -1], [0, -1]]])  # (0, 0) fg: right; (1, 0) bg: wrong
  loss, count = losses.task_losses([task], {"seg": logits}, {"seg": labels})
  assert int(count[0]) == 2
  log_p = jax.nn.log_softmax(jnp.array([0.0, 4.0]))
  np.testing.assert_allclose(loss[0], -(log_p[1] + log_p[0]) / 2, rtol=1e-6)
  accuracy = metrics.compute(losses.task_metrics([task], {"seg": logits}, {"seg": labels}),
                             "val")["val/seg/accuracy"]
  assert accuracy == pytest.approx(0.5)


@pytest.mark.parametrize("task", [
    Task("c", classes=("a", "b")), SMILING, Task("h", "regression", loss="huber"),
    Task("l", "regression", loss="l1"), Task("v", "regression", label_shape=(3,))],
    ids=lambda t: f"{t.kind}-{t.loss}")
def test_no_labels_give_loss_zero_and_a_zero_finite_gradient(task):
  outputs = jnp.ones((4, task.output_size))
  labels = jnp.full((4, *task.label_shape), task.missing_value, task.label_dtype)
  value_and_grad = jax.value_and_grad(
      lambda o: losses.task_losses([task], {task.name: o}, {task.name: labels})[0].sum())
  loss, grad = value_and_grad(outputs)
  assert float(loss) == 0.0
  assert bool(jnp.all(grad == 0.0))


def cubed_error(outputs, labels, mask):
  del mask
  return jnp.abs(outputs - labels) ** 3


def test_a_callable_loss_replaces_the_kind_loss_and_keeps_its_metrics():
  task = Task("y", "regression", loss=cubed_error)
  outputs, labels = jnp.array([[1.0], [0.0], [5.0]]), jnp.array([3.0, 1.0, jnp.nan])
  loss, count = losses.task_losses([task], {"y": outputs}, {"y": labels})
  np.testing.assert_allclose(loss[0], (8 + 1) / 2)
  result = metrics.compute(losses.task_metrics([task], {"y": outputs}, {"y": labels}), "val")
  assert result == pytest.approx({"val/y/loss": 4.5, "val/y/mae": 1.5,
                                  "val/y/rmse": np.sqrt(2.5)})


def test_a_callable_loss_of_the_wrong_shape_is_an_error_naming_the_task():
  task = Task("y", "regression", loss=lambda o, y, m: jnp.zeros(7))
  with pytest.raises(ValueError, match="task 'y': its loss gave shape"):
    losses.task_losses([task], {"y": jnp.zeros((3, 1))}, {"y": jnp.zeros(3)})


def test_an_output_of_the_wrong_width_is_an_error_naming_the_task():
  with pytest.raises(ValueError, match=r"task 'c': the model's output has shape \(3, 3\)"):
    losses.task_losses([Task("c", classes=("a", "b"))], {"c": jnp.zeros((3, 3))},
                       {"c": jnp.zeros(3, jnp.int32)})


def test_binary_metrics_and_kpi_are_accuracy_and_auc_over_labelled_elements():
  logits = jnp.array([[2.0], [-1.0], [1.0], [-3.0], [5.0]])
  labels = jnp.array([1, 1, 0, 0, -1])  # positives score {2, -1}, negatives {1, -3}
  result = metrics.compute(
      losses.task_metrics([SMILING], {"smiling": logits}, {"smiling": labels}), "val")
  assert result["val/smiling/accuracy"] == pytest.approx(0.5)
  assert result["val/smiling/auc"] == pytest.approx(0.75)  # 3 of the 4 pairs ordered right
  kpis = losses.task_kpis([SMILING], {"smiling": logits}, {"smiling": labels})
  np.testing.assert_allclose(kpis, [0.5])
