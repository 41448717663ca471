"""The generated shapes dataset: images, label CSVs with missing labels, determinism."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import mtl_jax as mj
from mtl_jax.data import frames, shapes


@pytest.fixture
def shapes_csvs(tmp_path):
  return mj.data.make_shapes(str(tmp_path / "shapes"), 40, missing=0.25, seed=1,
                             imshape=(32, 48), val_fraction=0.25)


def test_writes_train_and_val_csvs_of_absolute_paths_and_four_tasks(shapes_csvs):
  train_csv, val_csv = shapes_csvs
  train, val = pd.read_csv(train_csv), pd.read_csv(val_csv)
  assert os.path.basename(train_csv) == "train_labels.csv" and len(train) == 30 and len(val) == 10
  assert list(train.columns) == ["filepath", "shape", "color", "size", "x"]
  assert all(os.path.isabs(p) and os.path.isfile(p) for p in pd.concat([train, val]).filepath)
  with Image.open(train.filepath[0]) as image:
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (48, 32))


def test_blanks_the_missing_fraction_of_each_task_in_each_split(shapes_csvs):
  for csv, n in zip(shapes_csvs, (30, 10)):
    blank = pd.read_csv(csv)[list(shapes.TASKS)].isna().sum()
    assert blank.to_dict() == {task: round(0.25 * n) for task in shapes.TASKS}


@pytest.mark.filterwarnings("ignore:task .* appears only in")
def test_labels_have_the_documented_classes_and_range(shapes_csvs):
  train, val = (pd.read_csv(p) for p in shapes_csvs)
  tasks = frames.infer_tasks(train, val, shapes.TASKS, shapes.TASK_TYPES)
  assert [t.classes for t in tasks[:3]] == [tuple(sorted(shapes.SHAPES)),
                                            tuple(sorted(shapes.COLORS)),
                                            tuple(sorted(shapes.SIZES))]
  x = pd.concat([train, val]).x.dropna()
  assert ((0 < x) & (x < 1)).all()


def test_the_colour_and_x_labels_describe_the_drawn_shape():
  for i in range(12):
    image, labels = shapes.draw_example(np.random.default_rng(i), (64, 64))
    pixels = np.asarray(image).astype(int)
    shape_mask = np.ptp(pixels, axis=-1) > 60  # the background is gray, the shape is not
    dominant = np.bincount(pixels[shape_mask].argmax(-1)).argmax()
    assert ["red", "green", "blue"][dominant] == labels["color"]
    columns = np.flatnonzero(shape_mask.any(0))
    assert (columns.min() + columns.max() + 1) / 2 / 64 == pytest.approx(labels["x"], abs=0.03)


def test_the_same_seed_gives_the_same_files(tmp_path):
  first = mj.data.make_shapes(str(tmp_path / "a"), 6, seed=3)
  second = mj.data.make_shapes(str(tmp_path / "b"), 6, seed=3)
  other = mj.data.make_shapes(str(tmp_path / "c"), 6, seed=4)
  read = lambda csvs: pd.concat([pd.read_csv(p) for p in csvs]).reset_index(drop=True)
  a, b, c = read(first), read(second), read(other)
  pd.testing.assert_frame_equal(a.drop(columns="filepath"), b.drop(columns="filepath"))
  assert not a.drop(columns="filepath").equals(c.drop(columns="filepath"))
  for path_a, path_b in zip(a.filepath, b.filepath):
    with open(path_a, "rb") as fa, open(path_b, "rb") as fb:
      assert fa.read() == fb.read()
