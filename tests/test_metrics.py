"""Metric helpers: computing merged clu metrics, the binned AUC, Δm% against a baseline."""

from clu import metrics as clu_metrics
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from mtl_jax import metrics
from mtl_jax.tasks import BinnedAUC, RootMeanSquare


def _scores(seed, n=2000):
  """Overlapping positive and negative scores in (0, 1), about 30% positives, 10% masked."""
  rng = np.random.default_rng(seed)
  labels = (rng.random(n) < 0.3).astype(np.int32)
  probabilities = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * labels)))
  mask = rng.random(n) > 0.1
  return probabilities.astype(np.float32), labels, mask


@pytest.mark.parametrize("seed", [0, 1])
def test_binned_auc_is_within_a_few_thousandths_of_sklearn(seed):
  p, y, mask = _scores(seed)
  auc = BinnedAUC.from_model_output(jnp.asarray(p), jnp.asarray(y), jnp.asarray(mask))
  assert auc.compute() == pytest.approx(sk_metrics.roc_auc_score(y[mask], p[mask]), abs=2e-3)


def test_binned_auc_merged_over_batches_equals_one_pass():
  p, y, mask = _scores(2, n=300)
  parts = [BinnedAUC.from_model_output(jnp.asarray(p[s]), jnp.asarray(y[s]),
                                       jnp.asarray(mask[s]))
           for s in (slice(0, 100), slice(100, 300))]
  whole = BinnedAUC.from_model_output(jnp.asarray(p), jnp.asarray(y), jnp.asarray(mask))
  merged = metrics.merge(parts[0], parts[1])
  np.testing.assert_array_equal(merged.positives, whole.positives)
  np.testing.assert_array_equal(merged.negatives, whole.negatives)


def test_compute_leaves_out_empty_metrics_and_computes_the_others():
  one_class = BinnedAUC.from_model_output(jnp.array([0.2, 0.9]), jnp.array([1, 1]),
                                          jnp.array([True, True]))
  per_task = {"a": {"auc": one_class,
                    "rmse": RootMeanSquare(total=jnp.array(8.0), count=jnp.array(2)),
                    "mae": clu_metrics.Average(total=jnp.array(3.0), count=jnp.array(2))},
              "b": {"loss": clu_metrics.Average(total=jnp.array(0.0), count=jnp.array(0))}}
  assert metrics.compute(per_task, "val") == {"val/a/rmse": 2.0, "val/a/mae": 1.5}


def test_delta_m_by_hand_signs_lower_is_better_metrics():
  baseline = {"test/a/accuracy": 0.80, "test/b/mae": 2.0}
  method = {"test/a/accuracy": 0.88, "test/b/mae": 2.5, "test/c/accuracy": 0.1}
  # accuracy: +(0.88 - 0.80) / 0.80 = +10%; mae: -(2.5 - 2.0) / 2.0 = -25%; mean -7.5%.
  assert metrics.delta_m(method, baseline) == pytest.approx(-7.5)


def test_delta_m_of_the_baseline_itself_is_zero():
  baseline = {"test/a/accuracy": 0.9, "test/b/rmse": 1.5, "test/c/loss": 0.2}
  assert metrics.delta_m(baseline, baseline) == 0.0


def test_lower_is_better_reads_the_last_part_of_the_name():
  assert metrics.lower_is_better("test/depth/mae")
  assert metrics.lower_is_better("rmse")
  assert not metrics.lower_is_better("test/digit/accuracy")


@pytest.mark.parametrize("method, baseline, message", [
    ({}, {"test/a/accuracy": 0.5}, "not in the metrics"),
    ({"test/a/accuracy": 0.5}, {"test/a/accuracy": 0.0}, "is 0"),
    ({"test/a/accuracy": 0.5}, {}, "at least one"),
])
def test_delta_m_rejects_missing_metrics_and_zero_baselines(method, baseline, message):
  with pytest.raises(ValueError, match=message):
    metrics.delta_m(method, baseline)


def test_mean_rank_averages_each_metrics_rank_best_first():
  results = {"a": {"test/x/accuracy": 0.9, "test/y/mae": 3.0},
             "b": {"test/x/accuracy": 0.8, "test/y/mae": 1.0},
             "c": {"test/x/accuracy": 0.7, "test/y/mae": 2.0}}
  # accuracy ranks a 1, b 2, c 3; mae (lower is better) ranks b 1, c 2, a 3.
  assert metrics.mean_rank(results, ["test/x/accuracy", "test/y/mae"]) == {
      "a": 2.0, "b": 1.5, "c": 2.5}


def test_mean_rank_gives_tied_methods_the_mean_of_their_ranks():
  results = {"a": {"acc": 0.5}, "b": {"acc": 0.9}, "c": {"acc": 0.5}}
  assert metrics.mean_rank(results, ["acc"]) == {"a": 2.5, "b": 1.0, "c": 2.5}


def test_mean_rank_rejects_a_missing_metric():
  with pytest.raises(ValueError, match="lack the metric 'acc'"):
    metrics.mean_rank({"a": {"acc": 0.5}, "b": {}}, ["acc"])
