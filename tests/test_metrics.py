"""Metric helpers: Δm% against a baseline."""

import pytest

from mtl_jax import metrics


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
