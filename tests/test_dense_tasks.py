"""Per-pixel task kinds: masks, losses and whole-split metrics against hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses, metrics
from mtl_jax.tasks import Task, dense_metrics, encode

SEG = Task("seg", "segmentation", (0, 1, 2), label_shape=(2, 3))
DEPTH = Task("depth", "depth", label_shape=(1, 4))
NORMALS = Task("normals", "normals", label_shape=(1, 4, 3))


_task_metrics = jax.jit(losses.task_metrics, static_argnums=0)


def _computed(tasks, outputs, labels, batches=1):
  """metrics.compute of the task metrics merged over `batches` equal slices of the batch."""
  size = len(next(iter(labels.values()))) // batches
  total = None
  for b in range(batches):
    rows = slice(b * size, (b + 1) * size)
    total = metrics.merge(total, _task_metrics(
        tuple(tasks), {k: v[rows] for k, v in outputs.items()},
        {k: v[rows] for k, v in labels.items()}))
  return metrics.compute(jax.device_get(total), "test")


def _one_hot_logits(classes, num_classes=3):
  return jnp.asarray(np.eye(num_classes, dtype=np.float32)[np.asarray(classes)] * 5.0)


def test_miou_and_pixel_accuracy_of_a_hand_computed_case_merged_over_two_batches():
  labels = np.array([[[0, 0, 1], [1, 2, -1]], [[2, 2, 0], [1, 1, -1]]], np.int32)
  predicted = np.array([[[0, 1, 1], [1, 2, 0]], [[2, 0, 0], [1, 2, 2]]])
  # Labelled pixels (label, predicted): (0,0) (0,1) (1,1) (1,1) (2,2) | (2,2) (2,0) (0,0) (1,1)
  # (1,2). Class 0: 3 hits, 2 labelled + 1 more predicted... counted: n00 = 2, n01 = 1, n20 = 1
  # -> IoU_0 = 2 / (3 + 3 - 2) = 1/2; class 1: n11 = 3, n12 = 1, n01 = 1 -> 3 / (4 + 4 - 3) =
  # 3/5; class 2: n22 = 2, n20 = 1, n12 = 1 -> 2 / (3 + 3 - 2) = 1/2.
  out = _computed([SEG], {"seg": _one_hot_logits(predicted)}, {"seg": jnp.asarray(labels)},
                  batches=2)
  np.testing.assert_allclose(out["test/seg/miou"], (1 / 2 + 3 / 5 + 1 / 2) / 3, rtol=1e-6)
  np.testing.assert_allclose(out["test/seg/pixel_accuracy"], 7 / 10, rtol=1e-6)


def test_miou_leaves_out_a_class_absent_from_labels_and_predictions():
  counts = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]], np.float64)
  np.testing.assert_allclose(dense_metrics.mean_iou(counts), (3 / 4 + 2 / 3) / 2)


def test_depth_errors_over_valid_pixels_with_zero_and_nan_missing():
  labels = jnp.array([[[2.0, 0.0, 4.0, np.nan]], [[1.0, 1.0, 0.0, 5.0]]])
  outputs = jnp.array([[[1.0, 9.0, 5.0, 9.0]], [[1.5, 1.0, 9.0, 4.0]]])[..., None]
  out = _computed([DEPTH], {"depth": outputs}, {"depth": labels})
  errors = np.array([1.0, 1.0, 0.5, 0.0, 1.0])  # |d - d*| at the five valid pixels
  relative = errors / np.array([2.0, 4.0, 1.0, 1.0, 5.0])
  np.testing.assert_allclose(out["test/depth/abs_error"], errors.mean(), rtol=1e-6)
  np.testing.assert_allclose(out["test/depth/rel_error"], relative.mean(), rtol=1e-6)
  np.testing.assert_allclose(out["test/depth/loss"], errors.mean(), rtol=1e-6)


def _unit(degrees):
  """Unit vectors in the x-z plane at `degrees` from +z."""
  r = np.radians(np.asarray(degrees, np.float64))
  return np.stack([np.sin(r), np.zeros_like(r), np.cos(r)], -1).astype(np.float32)


def test_normal_angles_of_a_hand_computed_case():
  # Four labelled pixels at 5, 15, 25 and 40 degrees from the label; one pixel missing (0).
  labels = np.broadcast_to(_unit([0.0]), (1, 1, 5, 3)).copy()
  labels[0, 0, 4] = 0
  outputs = 3.0 * _unit([5.0, 15.0, 25.0, 40.0, 90.0])[None, None]   # normalised by the kind
  task = Task("normals", "normals", label_shape=(1, 5, 3))
  out = _computed([task], {"normals": jnp.asarray(outputs)}, {"normals": jnp.asarray(labels)})
  np.testing.assert_allclose(out["test/normals/mean_angle"], 21.25, atol=1e-3)
  np.testing.assert_allclose(out["test/normals/median_angle"], 20.0, atol=0.01)
  assert out["test/normals/within_11.25"] == pytest.approx(1 / 4)
  assert out["test/normals/within_22.5"] == pytest.approx(2 / 4)
  assert out["test/normals/within_30"] == pytest.approx(3 / 4)
  expected_loss = np.mean(1 - np.cos(np.radians([5.0, 15.0, 25.0, 40.0])))
  np.testing.assert_allclose(out["test/normals/loss"], expected_loss, rtol=1e-5)


_histogram = jax.jit(dense_metrics.AngleHistogram.from_model_output)


@pytest.mark.parametrize("count", [1, 2, 1001, 5000])
def test_the_histogram_median_is_within_one_bin_of_the_exact_median(count):
  angles = np.random.default_rng(count).gamma(2.0, 12.0, 5000).clip(0, 180).astype(np.float32)
  histogram = _histogram(jnp.asarray(angles), jnp.arange(5000) < count)  # the first `count`
  bin_width = dense_metrics.MAX_ANGLE / dense_metrics.ANGLE_BINS
  assert abs(histogram.compute() - np.median(angles[:count])) <= bin_width


def test_missing_pixels_add_nothing_to_the_losses_and_get_no_gradient():
  tasks = [SEG, DEPTH, NORMALS]
  labels = {"seg": jnp.array([[[0, -1, 2], [-1, -1, 1]]]),
            "depth": jnp.array([[[2.0, np.nan, 0.0, 3.0]]]),
            "normals": jnp.asarray(np.stack([_unit([0, 0, 0, 0])[None]]) * np.array(
                [1, 0, np.nan, 1], np.float32)[None, None, :, None])}
  outputs = {"seg": jnp.arange(18.0).reshape(1, 2, 3, 3) / 10,
             "depth": jnp.array([[[1.0, 7.0, 7.0, 5.0]]])[..., None],
             "normals": jnp.asarray(_unit([10, 50, 50, 30])[None, None])}
  total = lambda o: (lambda loss, counts: (loss.sum(), (loss, counts)))(
      *losses.task_losses(tasks, o, labels))
  grads, (loss, counts) = jax.jit(jax.grad(total, has_aux=True))(outputs)
  seg_logits = np.asarray(outputs["seg"])[0]
  log_p = seg_logits - np.log(np.exp(seg_logits).sum(-1, keepdims=True))
  expected_seg = -(log_p[0, 0, 0] + log_p[0, 2, 2] + log_p[1, 2, 1]) / 3
  expected_normals = np.mean(1 - np.cos(np.radians([10, 30])))
  np.testing.assert_allclose(loss, [expected_seg, (1 + 2) / 2, expected_normals], rtol=1e-5)
  np.testing.assert_array_equal(counts, [3, 2, 2 * 3])  # a valid normal counts 3 components
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  np.testing.assert_array_equal(grads["seg"][0, 0, 1], 0)
  np.testing.assert_array_equal(grads["depth"][0, 0, 1:3], 0)
  np.testing.assert_array_equal(grads["normals"][0, 0, 1:3], 0)


def test_encoding_marks_missing_pixels_and_refuses_bad_labels():
  assert np.isnan(encode(DEPTH, np.array([[[1.0, 0.0, 2.0, 3.0]]]))[0, 0, 1])
  raw_normals = np.zeros((1, 1, 4, 3), np.float32)
  raw_normals[0, 0, 0] = (0, 0, 1)
  raw_normals[0, 0, 2] = (0, np.nan, 1)
  encoded = encode(NORMALS, raw_normals)
  assert np.isnan(encoded[0, 0, 1:]).all() and not np.isnan(encoded[0, 0, 0]).any()
  np.testing.assert_array_equal(encode(SEG, np.array([[[0, -1, 2], [np.nan, 1, -5]]]))[0],
                                [[0, -1, 2], [-1, 1, -1]])
  with pytest.raises(ValueError, match="out of range"):
    encode(SEG, np.full((1, 2, 3), 3))
  with pytest.raises(ValueError, match="whole class indices"):
    encode(SEG, np.full((1, 2, 3), 0.5))
  with pytest.raises(ValueError, match=r"label_shape is \(H, W, 3\)"):
    Task("n", "normals", label_shape=(4, 4))


@pytest.mark.parametrize("name, lower", [
    ("test/depth/abs_error", True), ("test/depth/rel_error", True),
    ("test/normals/mean_angle", True), ("test/normals/median_angle", True),
    ("test/segmentation/miou", False), ("test/segmentation/pixel_accuracy", False),
    ("test/normals/within_11.25", False), ("test/normals/within_30", False)])
def test_delta_m_knows_which_dense_metrics_improve_downwards(name, lower):
  assert metrics.lower_is_better(name) is lower
  better = 0.9 if lower else 1.1
  assert metrics.delta_m({name: better}, {name: 1.0}) == pytest.approx(10.0)
