"""Linear-probe accuracy: how well a linear classifier reads labels off a representation.

As in patchwork's `linear_classification_test`: every third example (index % 3 == 0) is held
out, the rest train; features are standardised with the training part's mean and deviation;
a multinomial logistic regression (scikit-learn, lbfgs, L2 with C=1) is fit on the host and
scored on the held-out part. Deterministic given the features.
"""

from __future__ import annotations

import numpy as np

HOLD_OUT_EVERY = 3


def held_out(num_examples: int) -> np.ndarray:
  """bool[N]: the examples the probe is scored on (every third, starting with the first)."""
  return np.arange(num_examples) % HOLD_OUT_EVERY == 0


def check_labels(labels: np.ndarray) -> str | None:
  """Why `labels` i32[N] cannot be probed (a one-line reason), or None if they can."""
  test = held_out(len(labels))
  if len(np.unique(labels[~test])) < 2:
    return (f"the probe's training part (examples whose index % {HOLD_OUT_EVERY} != 0) has "
            "fewer than two classes")
  if not test.any():
    return "there are no examples to score the probe on"
  return None


def probe_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
  """Held-out accuracy of a logistic regression from `features` f32[N, D] to `labels` i32[N]."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel

  features = np.asarray(features, np.float64).reshape(len(features), -1)
  test = held_out(len(labels))
  mean = features[~test].mean(0)
  scale = features[~test].std(0)
  scale[scale == 0] = 1.0
  standard = (features - mean) / scale
  classifier = LogisticRegression(max_iter=1000).fit(standard[~test], labels[~test])
  return float((classifier.predict(standard[test]) == labels[test]).mean())
