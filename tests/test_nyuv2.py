"""NYUv2-layout files: the generator writes them, the reader reads them, the configs train."""

import json
import os

import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import config as config_lib
from mtl_jax import optim
from mtl_jax.data import nyuv2
from mtl_jax.errors import ConfigError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return mj.data.make_dense_shapes(str(tmp_path_factory.mktemp("nyu")), 6, n_val=3,
                                   size=(32, 32))


def _dataset_config(path, **overrides):
  config = config_lib.default_config().dataset
  config.name, config.path = "nyuv2", path
  config.update(overrides)
  return config


def test_the_generator_writes_the_mtan_layout_shapes_and_ranges(root):
  for split, count in (("train", 6), ("val", 3)):
    for part in nyuv2.PARTS:
      assert sorted(os.listdir(os.path.join(root, split, part))) == [
          f"{i}.npy" for i in range(count)]
  image, label, depth, normal = (np.load(os.path.join(root, "train", part, "0.npy"))
                                 for part in nyuv2.PARTS)
  assert (image.shape, label.shape, depth.shape, normal.shape) == (
      (32, 32, 3), (32, 32), (32, 32, 1), (32, 32, 3))
  assert all(a.dtype == np.float32 for a in (image, label, depth, normal))
  assert 0 <= image.min() and image.max() <= 1
  assert set(np.unique(label)) <= {-1.0, 0.0, 1.0, 2.0, 3.0}
  valid = np.linalg.norm(normal, axis=-1) > 0
  np.testing.assert_allclose(np.linalg.norm(normal[valid], axis=-1), 1, atol=1e-5)
  assert (depth[..., 0][valid] > 0).all()   # no normal where the depth is missing


def test_the_reader_gives_three_tasks_with_missing_pixels_encoded(root):
  data = mj.data.load(_dataset_config(root))
  assert [(t.name, t.kind, t.label_shape) for t in data.tasks] == [
      ("segmentation", "segmentation", (32, 32)), ("depth", "depth", (32, 32)),
      ("normals", "normals", (32, 32, 3))]
  assert data.tasks[0].classes == (0, 1, 2, 3)
  assert data.train.inputs.shape == (6, 32, 32, 3) and len(data.val) == len(data.test) == 3
  depth = np.load(os.path.join(root, "train", "depth", "0.npy"))[..., 0]
  np.testing.assert_array_equal(np.isnan(data.train.labels["depth"][0]), depth == 0)
  label = np.load(os.path.join(root, "train", "label", "0.npy"))
  np.testing.assert_array_equal(data.train.labels["segmentation"][0], label.astype(np.int32))


def test_an_ignore_index_becomes_missing(tmp_path, root):
  for part in nyuv2.PARTS:
    os.makedirs(tmp_path / "train" / part)
    np.save(tmp_path / "train" / part / "0.npy",
            np.load(os.path.join(root, "train", part, "0.npy")))
  label = np.load(tmp_path / "train" / "label" / "0.npy")
  label[:4] = 255
  np.save(tmp_path / "train" / "label" / "0.npy", label)
  arrays = nyuv2.read_split(str(tmp_path), "train", ignore_index=255)
  assert (arrays["label"][0, :4] == -1).all() and arrays["label"].max() < 255


@pytest.mark.parametrize("damage, message", [
    (lambda r: os.rename(os.path.join(r, "val", "normal"), os.path.join(r, "val", "n")),
     r"val/normal: no such directory"),
    (lambda r: np.save(os.path.join(r, "train", "depth", "2.npy"), np.zeros((16, 32, 1))),
     r"train/depth/2.npy: shape \(16, 32, 1\), expected \(32, 32\) \(or \(H, W, 1\)\)"),
    (lambda r: os.remove(os.path.join(r, "train", "label", "5.npy")),
     r"train/label/5.npy: missing")])
def test_a_broken_layout_is_one_error_naming_the_file(tmp_path, damage, message):
  path = mj.data.make_dense_shapes(str(tmp_path), 6, n_val=1, size=(32, 32))
  damage(path)
  with pytest.raises(ConfigError, match=message):
    mj.data.load(_dataset_config(path))


def test_the_nyuv2_config_without_a_path_exits_2_before_any_work(tmp_path, run_main, capsys):
  code = run_main("--config=configs/nyuv2.py", f"--workdir={tmp_path / 'w'}")
  assert code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "config.dataset.path must name the NYUv2 directory" in err[0], err
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_dense_shapes_trains_end_to_end_from_the_command_line(tmp_path, run_main):
  # Hard-sharing SegNet: SegNet-MTAN's step compiles for ~40 s on 2 cores; the configs train it.
  workdir = tmp_path / "run"
  code = run_main("--config=configs/dense_shapes.py:runlocal", f"--workdir={workdir}",
                  "--config.model.name=segnet", "--config.num_epochs=0",
                  "--config.num_steps=2", "--config.log_every=2", "--config.eval_every=2",
                  "--config.checkpoint_every=2")
  assert code == 0
  final = json.loads((workdir / "final_metrics.json").read_text())
  for name in ("segmentation/miou", "segmentation/pixel_accuracy", "depth/abs_error",
               "depth/rel_error", "normals/mean_angle", "normals/median_angle",
               "normals/within_11.25", "normals/within_22.5", "normals/within_30"):
    assert np.isfinite(final[f"test/{name}"]), name
  assert 0 <= final["test/segmentation/miou"] <= 1


def test_the_nyuv2_config_is_the_nash_mtl_protocol():
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("nyuv2_config", "configs/nyuv2.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("path=/data/nyuv2")
  assert (config.model.name, config.batch_size, config.num_epochs) == ("segnet_mtan", 2, 200)
  assert config.eval_every == 795 // 2   # the test set ("val") after every epoch
  schedule = optim.learning_rate_schedule(config.optimizer, 200 * 397)
  rates = [float(schedule(step)) for step in (0, 100 * 397 - 1, 100 * 397, 200 * 397 - 1)]
  np.testing.assert_allclose(rates, [1e-4, 1e-4, 5e-5, 5e-5], rtol=1e-6)  # StepLR(100, 0.5)
  assert tuple(config.dense_augment.scales) == (1.0, 1.2, 1.5)
  with pytest.raises(ValueError, match="unknown option"):
    module.get_config("path=/d,epochs=3")
