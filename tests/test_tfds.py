"""TFDS datasets: `config.dataset.name = "tfds"`, MNIST without a path, and their errors.

Nothing is downloaded: `tfds.testing.mock_data` stands in for `mnist` and `celeb_a` (random
examples drawn from the builders' features), and a tiny builder defined here is prepared on
disk to exercise the unmocked reading path.
"""

import importlib.util
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import mtl_jax as mj
from mtl_jax import config as config_lib
from mtl_jax import data as data_lib
from mtl_jax.data import mnist, tfds_source
from mtl_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELEBA = os.path.join(REPO, "configs", "celeba.py")


def _mock(num_examples):
  return tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_CODE)


def _config_file(path, arg=None):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _tfds_dataset_config(**tfds_overrides):
  c = config_lib.default_config().dataset
  c.name = "tfds"
  c.tfds.update(tfds_overrides)
  return c


class MtlJaxTestFaces(tfds.core.GeneratorBasedBuilder):
  """Faces of three heights with two bool attributes, a float age and a 3-class label."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, 12, 3)),
        "attributes": {"Smiling": np.bool_, "Male": np.bool_},
        "age": np.float32,
        "label": tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(20), "test": self._generate_examples(8)}

  def _generate_examples(self, n):
    for i in range(n):
      image = np.full((10 + i % 3, 12, 3), 10 * i, np.uint8)
      yield i, {"image": image, "attributes": {"Smiling": i % 2 == 1, "Male": i % 3 == 0},
                "age": 20.0 + i, "label": i % 3}


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
  """A data_dir holding MtlJaxTestFaces, prepared once (read-only for the tests)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  MtlJaxTestFaces(data_dir=data_dir).download_and_prepare()
  return data_dir


def _faces_config(faces_dir, **overrides):
  return _tfds_dataset_config(**{
      "name": "mtl_jax_test_faces", "data_dir": faces_dir, "image_size": (8, 8),
      "val_fraction": 0.25,
      "task_features": {"age": "age", "attributes": "attributes/*", "kind": "label"},
      **overrides})


# ----------------------------------------------------------------------------------------------
# The built-in mnist without a path reads TFDS `mnist`.


def test_mnist_without_a_path_reads_tfds_mnist_like_the_npz(tmp_path):
  with _mock(48):
    config = config_lib.default_config().dataset
    config.name = "mnist"
    data = data_lib.load(config)
    arrays = tfds_source.read_mnist(config.tfds)
  assert data.task_names == ("digit", "parity")
  assert data.train.inputs.shape[1:] == (28, 28, 1) and data.train.inputs.dtype == np.float32
  assert len(data.val) == round(48 * mnist.VAL_FRACTION) and len(data.train) == 48 - len(data.val)
  assert len(data.test) == 48
  # The same images written to an .npz load into the same Dataset.
  path = tmp_path / "m.npz"
  np.savez(path, **dict(zip(mnist.KEYS, arrays)))
  config.path = str(path)
  from_file = data_lib.load(config)
  assert from_file.tasks == data.tasks
  for split in ("train", "val", "test"):
    a, b = getattr(data, split), getattr(from_file, split)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    for task in data.task_names:
      np.testing.assert_array_equal(a.labels[task], b.labels[task])


# ----------------------------------------------------------------------------------------------
# config.dataset.name = "tfds".


def test_celeba_attributes_become_forty_binary_tasks():
  config = _config_file(CELEBA, "runlocal")
  with _mock(24):
    data = data_lib.load(config.dataset)
    attributes = list(tfds.builder("celeb_a").info.features["attributes"].keys())
  assert len(data.tasks) == 40 and list(data.task_names) == attributes
  assert {"Smiling", "Male", "5_o_Clock_Shadow"} <= set(data.task_names)
  assert {t.kind for t in data.tasks} == {"binary"}
  assert data.train.inputs.shape == (24, 16, 16, 3)  # max_examples 256 > the mock's 24
  assert len(data.val) == len(data.test) == 24       # CelebA's own validation split
  assert 0.0 <= data.train.inputs.min() and data.train.inputs.max() <= 1.0


@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_the_celeba_config_is_valid(arg):
  config = config_lib.complete(_config_file(CELEBA, arg))
  config_lib.validate(config, num_devices=1)
  tfds_config = config.dataset.tfds
  assert (config.dataset.name, tfds_config.name, tfds_config.val_split) == (
      "tfds", "celeb_a", "validation")
  assert tfds_config.task_features.to_dict() == {"attributes": "attributes/*"}
  assert tuple(tfds_config.image_size) == ((16, 16) if arg else (64, 64))


def test_a_prepared_dataset_is_read_resized_with_kinds_from_its_features(faces_dir):
  data = data_lib.load(_faces_config(faces_dir))
  # task_features' keys in order (age, attributes, kind); a group's tasks in the dataset's order.
  assert data.task_names == ("age", "Smiling", "Male", "kind")
  assert [t.kind for t in data.tasks] == ["regression", "binary", "binary", "classification"]
  assert data.train.inputs.shape == (15, 8, 8, 3) and len(data.val) == 5 and len(data.test) == 8
  # Labels and images match, example by example, what TFDS reads (resized uniform images keep
  # their one value: 10 * i, scaled to [0, 1]).
  index = np.round((data.test.labels["age"] - 20.0)).astype(int)
  np.testing.assert_allclose(data.test.inputs, np.broadcast_to(
      (10 * index / 255.0)[:, None, None, None], data.test.inputs.shape), atol=1e-6)
  np.testing.assert_array_equal(data.test.labels["kind"], index % 3)
  np.testing.assert_array_equal(data.test.labels["Smiling"], index % 2)
  np.testing.assert_array_equal(data.test.labels["Male"], (index % 3 == 0).astype(int))
  # The same split_seed draws the same validation rows; max_examples reads the first N.
  again = data_lib.load(_faces_config(faces_dir))
  np.testing.assert_array_equal(again.val.inputs, data.val.inputs)
  few = data_lib.load(_faces_config(faces_dir, max_examples=5))
  assert len(few.test) == 5
  np.testing.assert_array_equal(few.test.inputs, data.test.inputs[:5])


def test_task_types_override_the_kind_by_task_or_by_group(faces_dir):
  data = data_lib.load(_faces_config(
      faces_dir, task_types={"attributes": "classification", "age": "classification"}))
  assert [t.kind for t in data.tasks] == ["classification"] * 4


def test_flatten_and_normalize_apply_as_for_mnist(faces_dir):
  config = _faces_config(faces_dir)
  config.flatten, config.normalize = True, (0.5, 0.25)
  plain, flat = data_lib.load(_faces_config(faces_dir)), data_lib.load(config)
  np.testing.assert_allclose(flat.train.inputs,
                             (plain.train.inputs.reshape(15, -1) - 0.5) / 0.25, rtol=1e-6)


def test_a_few_steps_train_on_mock_mnist_through_the_tfds_source(tmp_path):
  config = config_lib.default_config()
  config.dataset = _tfds_dataset_config(name="mnist", task_features={"digit": "label"},
                                        max_examples=64)
  config.dataset.flatten = True
  config.model.backbone, config.model.shared_layers, config.model.task_layers = (16,), (), ()
  config.batch_size = config.eval_batch_size = 16
  config.num_steps = config.steps_per_dispatch = 5
  config.log_every = config.eval_every = config.checkpoint_every = 5
  with _mock(64):
    final = mj.train_and_evaluate(ml_collections.ConfigDict(config), str(tmp_path / "w"))
  assert 0.0 <= final["test/digit/accuracy"] <= 1.0, final


# ----------------------------------------------------------------------------------------------
# Mistakes: one ConfigError naming the key.


@pytest.mark.parametrize("overrides, message", [
    ({"name": ""}, "config.dataset.tfds.name must be set"),
    ({"task_features": {}}, "config.dataset.tfds.task_features must map"),
    ({"task_features": {"a": "attr*"}}, "config.dataset.tfds.task_features.a must be"),
    ({"task_types": {"digit": "colour"}}, "config.dataset.tfds.task_types.digit must be one of"),
    ({"image_size": (64,)}, "config.dataset.tfds.image_size must be"),
    ({"val_fraction": 1.0}, "config.dataset.tfds.val_fraction must be in"),
    ({"max_examples": -1}, "config.dataset.tfds.max_examples must be >= 0"),
    ({"nmae": "mnist"}, "unknown key config.dataset.tfds.nmae"),
])
def test_bad_keys_are_config_errors_naming_them(overrides, message):
  config = config_lib.default_config()
  config.dataset.name = "tfds"
  config.dataset.tfds.name, config.dataset.tfds.task_features = "mnist", {"digit": "label"}
  for key, value in overrides.items():
    config.dataset.tfds[key] = value
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(config_lib.complete(config), num_devices=1)


@pytest.mark.parametrize("overrides, message", [
    ({"name": "no_such_dataset"}, "config.dataset.tfds.name: no TFDS dataset 'no_such_dataset'"),
    ({"task_features": {"kind": "lable"}},
     "config.dataset.tfds.task_features.kind: no feature 'lable'"),
    ({"task_features": {"kind": "label/*"}},
     "config.dataset.tfds.task_features.kind: 'label' is one feature, not a group"),
    ({"task_features": {"Male": "label", "attributes": "attributes/*"}},
     r"config.dataset.tfds.task_features.attributes: task name\(s\) \['Male'\] already taken"),
    ({"task_types": {"colour": "binary"}}, r"task_types names no task .*\['colour'\]"),
    ({"image": "photo"}, "config.dataset.tfds.image: no feature 'photo'"),
    ({"test_split": "testing"}, "config.dataset.tfds.test_split: Unknown split 'testing'"),
    ({"image_size": ()}, "config.dataset.tfds.image_size: cannot batch the 'image' images"),
    ({"task_types": {"age": "binary"}}, "config.dataset.tfds: .*'age' is binary but has 20"),
])
def test_mistakes_found_in_the_dataset_are_config_errors_naming_the_key(faces_dir, overrides,
                                                                       message):
  with pytest.raises(ConfigError, match=message) as error:
    data_lib.load(_faces_config(faces_dir, **overrides))
  assert "\n" not in str(error.value)


def test_a_dataset_missing_without_download_is_one_config_error(tmp_path):
  config = _tfds_dataset_config(name="mnist", data_dir=str(tmp_path), download=False,
                                task_features={"digit": "label"})
  for load in (data_lib.load, mnist.load_mnist):
    with pytest.raises(ConfigError) as error:
      load(config)
    message = str(error.value)
    assert "TFDS dataset 'mnist' is not in" in message and str(tmp_path) in message
    assert "config.dataset.tfds.download is False" in message and "\n" not in message


def test_a_failed_download_is_one_config_error(tmp_path, monkeypatch):
  def no_network(self, *args, **kwargs):
    raise OSError("Failed to resolve 'storage.googleapis.com'\nretries exhausted")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
  config = _tfds_dataset_config(name="mnist", data_dir=str(tmp_path),
                                task_features={"digit": "label"})
  with pytest.raises(ConfigError, match=r"TFDS dataset 'mnist' is not in .* and downloading it "
                     r"failed \(OSError: Failed to resolve 'storage.googleapis.com'\)") as error:
    data_lib.load(config)
  assert "\n" not in str(error.value)


def test_a_missing_dataset_on_the_command_line_prints_one_line_and_exits_2(tmp_path, run_main,
                                                                           capsys):
  code = run_main(f"--config={CELEBA}:runlocal", f"--workdir={tmp_path / 'w'}",
                  f"--config.dataset.tfds.data_dir={tmp_path / 'empty'}",
                  "--config.dataset.tfds.download=False")
  assert code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("mtl_jax: error: TFDS dataset 'celeb_a'"), lines
  assert str(tmp_path / "empty") in lines[0]


def test_without_tensorflow_a_tfds_dataset_is_one_line_naming_the_extra(monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "tensorflow" else find_spec(name, *a))
  with pytest.raises(ConfigError, match=r"needs tensorflow: pip install 'mtl_jax\[tfds\]'"):
    tfds_source._require_tfds("mnist")  # pylint: disable=protected-access
