"""Masked per-task losses and per-task evaluation metrics.

Following flax's ogbg_molpcba example: a missing label is replaced by a safe value before the
loss so no NaN reaches the gradient, then masked out; each task's mean divides by
max(count, 1), so a task without labels in the batch has loss 0 and zero gradient.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp
import optax

from mtl_jax.tasks import Task


def label_mask(task: Task, labels: jnp.ndarray) -> jnp.ndarray:
  """bool[B]: True where the example has a label for `task`."""
  return labels >= 0 if task.is_classification else ~jnp.isnan(labels)


def per_example_loss(task: Task, output: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """f32[B] loss of each example, finite everywhere (missing labels replaced by 0).

  Classification: softmax cross-entropy of the logits. Regression: squared error of the one
  output value.
  """
  mask = label_mask(task, labels)
  safe = jnp.where(mask, labels, 0)
  if task.is_classification:
    return optax.softmax_cross_entropy_with_integer_labels(output.astype(jnp.float32), safe)
  return jnp.square(output[..., 0].astype(jnp.float32) - safe)


def task_losses(tasks: Sequence[Task], outputs: Mapping[str, jnp.ndarray],
                labels: Mapping[str, jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(losses f32[T], counts i32[T]): each task's mean loss over its labelled examples."""
  losses, counts = [], []
  for task in tasks:
    mask = label_mask(task, labels[task.name])
    count = mask.sum().astype(jnp.int32)
    total = jnp.where(mask, per_example_loss(task, outputs[task.name], labels[task.name]),
                      0.0).sum()
    losses.append(total / jnp.maximum(count, 1))
    counts.append(count)
  return jnp.stack(losses), jnp.stack(counts)


def _average(values: jnp.ndarray, mask: jnp.ndarray) -> clu_metrics.Average:
  return clu_metrics.Average.from_model_output(values.astype(jnp.float32), mask=mask)


def task_metrics(tasks: Sequence[Task], outputs: Mapping[str, jnp.ndarray],
                 labels: Mapping[str, jnp.ndarray]) -> dict[str, dict[str, clu_metrics.Metric]]:
  """{task: {metric: clu Average}} over the labelled examples of the batch.

  Classification: `loss`, `accuracy`; regression: `loss` (the squared error, from which
  `mtl_jax.metrics.compute` also reports `rmse`) and `mae`.
  """
  out = {}
  for task in tasks:
    y, pred = labels[task.name], outputs[task.name]
    mask = label_mask(task, y)
    loss = per_example_loss(task, pred, y)
    if task.is_classification:
      correct = pred.argmax(-1) == y
      out[task.name] = {"loss": _average(loss, mask), "accuracy": _average(correct, mask)}
    else:
      out[task.name] = {"loss": _average(loss, mask), "mae": _average(jnp.sqrt(loss), mask)}
  return out


def task_kpis(tasks: Sequence[Task], outputs: Mapping[str, jnp.ndarray],
              labels: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
  """f32[T] batch KPI per task over its labelled examples (0 if none), never differentiated.

  Classification: accuracy in [0, 1]; regression: mean absolute error.
  """
  kpis = []
  for task in tasks:
    y, pred = labels[task.name], jax.lax.stop_gradient(outputs[task.name])
    mask = label_mask(task, y)
    if task.is_classification:
      value = (pred.argmax(-1) == y).astype(jnp.float32)
    else:
      value = jnp.abs(pred[..., 0].astype(jnp.float32) - jnp.where(mask, y, 0))
    kpis.append(jnp.where(mask, value, 0.0).sum() / jnp.maximum(mask.sum(), 1))
  return jnp.stack(kpis)
