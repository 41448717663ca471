"""Labels from DataFrames: column checks, class sets from both splits, encoding."""

import numpy as np
import pandas as pd
import pytest

from mtl_jax import ConfigError
from mtl_jax.data import frames


def _train():
  return pd.DataFrame({"filepath": ["a.png", "b.png", "c.png", "d.png"],
                       "color": ["red", None, "blue", ""],
                       "count": [1.0, 3.0, np.nan, 2.0],
                       "age": [30.5, np.nan, 41.0, 18.0]})


def _val():
  return pd.DataFrame({"filepath": ["e.png", "f.png"], "color": ["green", "red"],
                       "count": [1, 2], "age": [22.0, None]})


def test_a_missing_task_column_is_an_error_that_lists_the_columns():
  with pytest.raises(ConfigError, match=r"task 'colour' is not a column of the train labels; "
                                        r"columns: \['filepath', 'color', 'count', 'age'\]"):
    frames.check_columns(_train(), ["colour", "age"], "filepath", "train")


def test_a_missing_filepath_column_is_an_error_that_lists_the_columns():
  with pytest.raises(ConfigError, match=r"'path' .* not a column of the val labels; "
                                        r"columns: \['filepath', 'color'"):
    frames.check_columns(_val(), ["color"], "path", "val")


def test_present_columns_pass_the_check():
  frames.check_columns(_train(), ["color", "age"], "filepath", "train")


def test_classes_come_from_both_splits_and_a_one_split_class_warns():
  with pytest.warns(UserWarning) as caught:
    color, = frames.infer_tasks(_train(), _val(), ["color"])
  assert color.classes == ("blue", "green", "red")
  assert sorted(str(w.message) for w in caught) == [
      "task 'color': class 'blue' appears only in the train labels",
      "task 'color': class 'green' appears only in the val labels"]
  assert all(w.filename == __file__ for w in caught)  # points at the caller


@pytest.mark.filterwarnings("ignore:task 'count'")
def test_numeric_tasks_are_classification_with_int_classes_unless_declared_regression():
  count, age = frames.infer_tasks(_train(), _val(), ["count", "age"],
                                  task_types={"age": "regression"})
  assert count.kind == "classification" and count.classes == (1, 2, 3)
  assert all(type(c) is int for c in count.classes)
  assert age.kind == "regression"


def test_a_task_without_train_labels_is_an_error():
  train = _train().assign(color=[None, np.nan, "", None])
  with pytest.raises(ConfigError, match="task 'color' has no labels in the train labels"):
    frames.infer_tasks(train, _val(), ["color"])


def test_bad_task_types_are_errors():
  with pytest.raises(ConfigError, match="task_types\\['age'\\] must be one of"):
    frames.infer_tasks(_train(), _val(), ["age"], task_types={"age": "ordinal"})
  with pytest.raises(ConfigError, match="regression task but has non-numeric labels"):
    frames.infer_tasks(_train(), _val(), ["color"], task_types={"color": "regression"})
  with pytest.raises(ConfigError, match=r"task_types names \['size'\]"):
    frames.infer_tasks(_train(), _val(), ["color"], task_types={"size": "regression"})


def test_a_task_column_missing_from_val_is_an_error():
  with pytest.raises(ConfigError, match="task 'age' is not a column of the val labels"):
    frames.infer_tasks(_train(), _val().drop(columns="age"), ["age"])


def test_encode_frame_gives_int32_with_minus_one_and_float32_with_nan():
  with pytest.warns(UserWarning, match="only in the"):
    tasks = frames.infer_tasks(_train(), _val(), ["color", "count", "age"],
                               task_types={"age": "regression"})
  encoded = frames.encode_frame(_train(), tasks)
  np.testing.assert_array_equal(encoded["color"], [2, -1, 0, -1])
  np.testing.assert_array_equal(encoded["count"], [0, 2, -1, 1])
  np.testing.assert_array_equal(encoded["age"], [30.5, np.nan, 41.0, 18.0])
  assert encoded["color"].dtype == np.int32 and encoded["age"].dtype == np.float32
  np.testing.assert_array_equal(frames.encode_frame(_val(), tasks)["count"], [0, 1])


def test_labels_read_back_from_csv_keep_their_classes(tmp_path):
  path = tmp_path / "labels.csv"
  _train().to_csv(path, index=False)
  read = pd.read_csv(path)
  color, count = frames.infer_tasks(read, None, ["color", "count"])
  assert color.classes == ("blue", "red") and count.classes == (1, 2, 3)


def test_binary_columns_read_back_from_csv_with_empty_cells(tmp_path):
  path = tmp_path / "attributes.csv"
  pd.DataFrame({"filepath": ["a", "b", "c", "d"], "smiling": [True, None, False, True],
                "young": [1, 0, None, 1]}).to_csv(path, index=False)
  read = pd.read_csv(path)
  smiling, young = frames.infer_tasks(read, None, ["smiling", "young"], task_types="binary")
  assert smiling.classes == (False, True) and young.classes == (0, 1)
  encoded = frames.encode_frame(read, (smiling, young))
  np.testing.assert_array_equal(encoded["smiling"], [1, -1, 0, 1])
  np.testing.assert_array_equal(encoded["young"], [1, 0, -1, 1])


def test_task_losses_reach_the_tasks_and_bad_ones_are_config_errors():
  age, = frames.infer_tasks(_train(), _val(), ["age"], task_types={"age": "regression"},
                            task_losses={"age": "huber"})
  assert age.loss == "huber"
  with pytest.raises(ConfigError, match="task 'age': unknown loss 'hinge'"):
    frames.infer_tasks(_train(), _val(), ["age"], task_types={"age": "regression"},
                       task_losses={"age": "hinge"})
  with pytest.raises(ConfigError, match=r"task_losses names \['size'\]"):
    frames.infer_tasks(_train(), _val(), ["age"], task_losses={"size": "mse"})
  with pytest.raises(ConfigError, match=r"task 'color' is binary but has 3 distinct"):
    frames.infer_tasks(_train(), _val(), ["color"], task_types={"color": "binary"})
