"""Masked per-task losses, KPIs and evaluation metrics, element by element.

A task's labels are [B, *label_shape]; each element is present or missing on its own (see
`mtl_jax.tasks`). Following flax's ogbg_molpcba example, a missing label is replaced by a safe
value (0) before the loss so no NaN reaches the gradient, the per-element loss is masked after,
and the task's loss is the sum over its labelled elements divided by max(count, 1): the mean
over the labelled elements of the (global) batch, and 0 with zero gradient for a task that has
none.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from clu import metrics as clu_metrics
import jax
import jax.numpy as jnp

from mtl_jax.tasks import Task
from mtl_jax.tasks.clu_metrics import masked_average


def label_mask(task: Task, labels: jnp.ndarray) -> jnp.ndarray:
  """bool[B, *label_shape]: True where the element has a label for `task`."""
  return task.kind_spec.mask(labels)


def _prepared(task: Task, output: jnp.ndarray, labels: jnp.ndarray):
  """(outputs [B, *label_shape(, C)] f32, safe labels, mask) of one task."""
  if labels.shape[1:] != task.label_shape:
    raise ValueError(f"task {task.name!r}: labels of shape {labels.shape} do not have the "
                     f"task's label_shape {task.label_shape} per example")
  mask = label_mask(task, labels)
  safe = jnp.where(mask, labels, 0)
  return task.kind_spec.prepare(task, output), safe, mask


def element_losses(task: Task, output: jnp.ndarray,
                   labels: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(f32[B, *label_shape] losses, 0 where missing; bool mask of the labelled elements)."""
  output, safe, mask = _prepared(task, output, labels)
  return _masked_loss(task, output, safe, mask), mask


def _masked_loss(task: Task, output, safe, mask) -> jnp.ndarray:
  values = jnp.asarray(task.loss_fn(output, safe, mask), jnp.float32)
  try:
    values = jnp.broadcast_to(values, mask.shape)
  except ValueError:
    raise ValueError(f"task {task.name!r}: its loss gave shape {values.shape}; per-element "
                     f"losses of shape {mask.shape} expected") from None
  return jnp.where(mask, values, 0.0)


def task_losses(tasks: Sequence[Task], outputs: Mapping[str, jnp.ndarray],
                labels: Mapping[str, jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(losses f32[T], counts i32[T]): each task's mean loss over its labelled elements.

  `counts` are the labelled elements (not examples) of each task in the batch.
  """
  losses, counts = [], []
  for task in tasks:
    values, mask = element_losses(task, outputs[task.name], labels[task.name])
    count = mask.sum().astype(jnp.int32)
    losses.append(values.sum() / jnp.maximum(count, 1))
    counts.append(count)
  return jnp.stack(losses), jnp.stack(counts)


def task_metrics(tasks: Sequence[Task], outputs: Mapping[str, jnp.ndarray],
                 labels: Mapping[str, jnp.ndarray]) -> dict[str, dict[str, clu_metrics.Metric]]:
  """{task: {metric: clu metric}} over the labelled elements of the batch; merge to add batches.

  Every task reports "loss" (its own, callable or not); classification "accuracy"; binary
  "accuracy" and "auc" (`BinnedAUC`); regression "mae" and "rmse".
  """
  out = {}
  for task in tasks:
    output, safe, mask = _prepared(task, outputs[task.name], labels[task.name])
    out[task.name] = {"loss": masked_average(_masked_loss(task, output, safe, mask), mask),
                      **task.kind_spec.metrics(task, output, safe, mask)}
  return out


def task_kpis(tasks: Sequence[Task], outputs: Mapping[str, jnp.ndarray],
              labels: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
  """f32[T] batch KPI per task over its labelled elements (0 if none), never differentiated.

  The kind's `kpi_name`: accuracy in [0, 1] for classification and binary, mean absolute error
  for regression.
  """
  kpis = []
  for task in tasks:
    output, safe, mask = _prepared(task, jax.lax.stop_gradient(outputs[task.name]),
                                   labels[task.name])
    values = jnp.where(mask, task.kind_spec.kpi(task, output, safe), 0.0)
    kpis.append(values.sum() / jnp.maximum(mask.sum(), 1))
  return jnp.stack(kpis)
