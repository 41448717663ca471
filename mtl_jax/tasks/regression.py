"""Regression: real-valued labels (NaN missing), one output per label element; MAE, RMSE."""

from __future__ import annotations

from clu import metrics as clu_metrics
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax.tasks import base
from mtl_jax.tasks.clu_metrics import RootMeanSquare, masked_average

HUBER_DELTA = 1.0


def mse(outputs: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Squared error (y - t)^2 per element."""
  del mask
  return jnp.square(outputs - labels)


def l1(outputs: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Absolute error |y - t| per element."""
  del mask
  return jnp.abs(outputs - labels)


def huber(outputs: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Huber loss with delta 1 (optax): e^2 / 2 for |e| <= 1, |e| - 1/2 beyond (Huber, 1964)."""
  del mask
  return optax.huber_loss(outputs, labels, delta=HUBER_DELTA)


class Regression(base.Kind):
  """float32 targets (NaN missing); the head emits one value per label element."""
  name = "regression"
  integer_labels = False
  losses = {"mse": mse, "l1": l1, "huber": huber}
  default_loss = "mse"
  kpi_name = "mae"

  def infer_classes(self, name: str, values: np.ndarray) -> tuple:
    _numeric(name, values)
    return ()

  def encode(self, task, values: np.ndarray) -> np.ndarray:
    return _numeric(task.name, values)

  def metrics(self, task, outputs: jnp.ndarray, labels: jnp.ndarray,
              mask: jnp.ndarray) -> dict[str, clu_metrics.Metric]:
    error = outputs - labels
    return {"mae": masked_average(jnp.abs(error), mask),
            "rmse": masked_average(jnp.square(error), mask, RootMeanSquare)}

  def kpi(self, task, outputs: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    return jnp.abs(outputs - labels)

  def predictions(self, task, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """"<task>": the predicted value (an array per row for element-wise labels)."""
    return {task.name: base.per_row(outputs.astype(np.float32))}


def _numeric(name: str, values: np.ndarray) -> np.ndarray:
  """float32 labels, NaN where missing; ValueError naming the task if one is not a number."""
  if values.dtype.kind in "biuf":
    return values.astype(np.float32)
  missing = base.missing_mask(values)
  out = np.full(values.shape, np.nan, np.float32)
  try:
    out[~missing] = values[~missing].astype(np.float32)
  except (TypeError, ValueError):
    bad = next((v for v in values[~missing].ravel() if not _is_float(v)), None)
    raise ValueError(f"task {name!r} is a regression task but has non-numeric labels "
                     f"(e.g. {base.plain(bad)!r})") from None
  return out


def _is_float(value) -> bool:
  try:
    float(value)
    return True
  except (TypeError, ValueError):
    return False
