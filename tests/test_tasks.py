"""The task contract: kinds by name, label encoding, head widths, predictions, JSON, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses, tasks
from mtl_jax.tasks import Task, base


def test_encoding_round_trips_through_the_class_names():
  raw = np.array(["red", None, "blue", "", "red", np.nan], dtype=object)
  task = tasks.infer_task("color", raw)
  codes = tasks.encode(task, raw)
  np.testing.assert_array_equal(codes, [1, -1, 0, -1, 1, -1])
  present = codes >= 0
  assert [task.classes[c] for c in codes[present]] == list(raw[present])


@pytest.mark.parametrize("raw, classes, encoded", [
    ([True, False, None, True], (False, True), [1, 0, -1, 1]),
    ([1.0, 0.0, np.nan, 1.0], (0, 1), [1, 0, -1, 1]),
    ([1, 1, None, 1], (0, 1), [1, 1, -1, 1]),  # one value seen: still (0, 1)
    (["yes", "no", None, "yes"], ("no", "yes"), [1, 0, -1, 1]),  # sorted second is positive
], ids=["bool", "float01", "one-value", "strings"])
def test_binary_labels_are_any_two_values_encoded_zero_one(raw, classes, encoded):
  task = tasks.infer_task("smiling", np.array(raw, dtype=object), kind="binary")
  assert task.classes == classes and task.output_size == 1
  np.testing.assert_array_equal(tasks.encode(task, raw), encoded)
  assert tasks.encode(task, raw).dtype == np.int32


def test_missing_values_and_dtypes_per_kind():
  assert Task("c", classes=("a", "b")).missing_value == -1
  assert Task("b", "binary").missing_value == -1
  assert np.isnan(Task("r", "regression").missing_value)
  assert Task("b", "binary").label_dtype == np.int32
  assert Task("r", "regression").label_dtype == np.float32


def test_head_widths_follow_the_kind_and_the_label_shape():
  assert Task("c", classes=("a", "b", "c")).output_size == 3
  assert Task("b", "binary").output_size == 1
  assert Task("r", "regression").output_size == 1
  assert Task("v", "regression", label_shape=(3,)).output_size == 3
  seg = Task("seg", classes=(0, 1, 2), label_shape=(4, 5))
  assert seg.output_shape == (4, 5, 3) and seg.output_size == 60
  assert Task("c", classes=("a", "b")).is_classification
  assert not Task("b", "binary").is_classification


def test_element_wise_labels_keep_their_shape_and_missing_elements():
  raw = np.array([[[0.5, np.nan]], [[np.nan, 2.0]]])  # [N=2, 1, 2]
  task = tasks.infer_task("depth", raw, kind="regression")
  assert task.label_shape == (1, 2)
  np.testing.assert_array_equal(tasks.is_missing(task, tasks.encode(task, raw)),
                                [[[False, True]], [[True, False]]])
  np.testing.assert_array_equal(tasks.labelled_examples(task, np.full((2, 1, 2), np.nan)),
                                [False, False])


def test_predictions_from_raw_outputs():
  color = Task("color", classes=("blue", "red"))
  columns = color.predictions(np.array([[0.0, 2.0], [1.0, 0.0]]))
  assert list(columns["color"]) == ["red", "blue"]
  np.testing.assert_allclose(columns["color/red"], [1 / (1 + np.exp(-2)), 1 / (1 + np.e)],
                             rtol=1e-6)
  np.testing.assert_allclose(columns["color/blue"] + columns["color/red"], 1.0, rtol=1e-6)
  smiling = Task("smiling", "binary", classes=("no", "yes"))
  columns = smiling.predictions(np.array([[1.5], [-0.5]]))
  assert list(columns["smiling"]) == ["yes", "no"]
  np.testing.assert_allclose(columns["smiling/probability"],
                             1 / (1 + np.exp([-1.5, 0.5])), rtol=1e-6)
  age = Task("age", "regression")
  np.testing.assert_array_equal(age.predictions(np.array([[3.0], [4.5]]))["age"], [3.0, 4.5])


def test_element_wise_predictions_give_one_array_per_row():
  task = Task("v", "regression", label_shape=(2,))
  column = task.predictions(np.arange(6.0).reshape(3, 2))["v"]
  assert len(column) == 3
  np.testing.assert_array_equal(column[2], [4.0, 5.0])


def my_loss(outputs, labels, mask):
  del mask
  return jnp.abs(outputs - labels) ** 3


@pytest.mark.parametrize("task", [
    Task("digit", classes=tuple(str(i) for i in range(3))),
    Task("smiling", "binary", classes=(False, True)),
    Task("age", "regression", loss="huber"),
    Task("depth", "regression", loss="l1", label_shape=(4, 5)),
], ids=lambda t: t.kind + "-" + str(t.loss))
def test_json_round_trip(task):
  assert Task.from_json(task.to_json()) == task


def test_a_callable_loss_is_saved_by_name_and_must_be_passed_again():
  task = Task("y", "regression", loss=my_loss)
  saved = task.to_json()
  assert saved["loss"] == "my_loss" and saved["custom_loss"]
  with pytest.raises(ValueError, match="task 'y' was trained with the callable loss 'my_loss'"):
    Task.from_json(saved)
  assert Task.from_json(saved, loss=my_loss) == task
  assert Task("y", "regression", loss=lambda o, y, m: o).loss_name == "custom"


def test_old_run_json_without_loss_or_label_shape_loads_with_defaults():
  task = Task.from_json({"name": "c", "kind": "classification", "classes": ["a", "b"]})
  assert task.loss == "cross_entropy" and task.label_shape == ()


@pytest.mark.parametrize("make, message", [
    (lambda: Task("t", "ordinal"), r"task 't': unknown task kind 'ordinal'; known: \["),
    (lambda: Task("t", "regression", loss="hinge"), r"task 't': unknown loss 'hinge' for a "
                                                     r"regression task; known: \['huber'"),
    (lambda: Task("t", "classification", ("a",)), "task 't' has 1 class"),
    (lambda: Task("t", "binary", ("a", "b", "c")), "task 't': a binary task has two classes"),
    (lambda: Task("t", "regression", ("a", "b")), "task 't': a regression task has no classes"),
    (lambda: tasks.infer_task("t", ["a", "b", "c", None], kind="binary"),
     r"task 't' is binary but has 3 distinct label\(s\) \('a', 'b', 'c'\)"),
    (lambda: tasks.infer_task("t", ["1.5", "tall"], kind="regression"),
     "task 't' is a regression task but has non-numeric labels .e.g. 'tall'"),
    (lambda: tasks.encode(Task("t", classes=("a", "b")), ["a", "z"]),
     r"task 't': label 'z' is not one of its classes \('a', 'b'\)"),
    (lambda: tasks.encode(Task("t", "regression", label_shape=(2,)), np.zeros((3, 4))),
     r"task 't': labels of shape \(3, 4\) do not have the task's label_shape \(2,\)"),
])
def test_bad_tasks_raise_value_errors_naming_the_task(make, message):
  with pytest.raises(ValueError, match=message):
    make()


class _Count(base.Kind):
  """A toy kind (counts, Poisson loss on a log-rate) to show how a kind is added."""
  name = "count"
  integer_labels = False
  losses = {"poisson": lambda log_rate, y, mask: jnp.exp(log_rate) - y * log_rate}
  default_loss = "poisson"
  kpi_name = "mae"

  def encode(self, task, values):
    return values.astype(np.float32)

  def metrics(self, task, outputs, labels, mask):
    return {}

  def kpi(self, task, outputs, labels):
    return jnp.abs(jnp.exp(outputs) - labels)

  def predictions(self, task, outputs):
    return {task.name: np.exp(outputs)}


def test_a_kind_added_to_the_registry_works_through_the_losses(monkeypatch):
  monkeypatch.setitem(tasks.KINDS, "count", _Count())
  task = tasks.infer_task("visits", [2.0, np.nan], kind="count")
  labels = jnp.asarray(tasks.encode(task, [2.0, np.nan]))
  loss, count = losses.task_losses([task], {"visits": jnp.zeros((2, 1))}, {"visits": labels})
  np.testing.assert_allclose(loss, [1.0])  # exp(0) - 2 * 0, the NaN row masked
  assert int(count[0]) == 1
  np.testing.assert_allclose(
      losses.task_kpis([task], {"visits": jnp.zeros((2, 1))}, {"visits": labels}), [1.0])
