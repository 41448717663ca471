"""`Task`: one prediction target, its kind, classes, loss and label shape; label encoding.

Encoded labels are int32 with -1 missing (classification, binary) or float32 with NaN missing
(regression): `Task.missing_value`. Raw labels are missing where None, NaN or an empty string.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mtl_jax.tasks import base, registry

CLASSIFICATION = "classification"
BINARY = "binary"
REGRESSION = "regression"
MISSING_CLASS = -1
CUSTOM_LOSS = "custom"


@dataclasses.dataclass(frozen=True)
class Task:
  """One prediction target.

  Attributes:
    name: the key of its labels in a batch and of its output in the model's outputs.
    kind: a name in `mtl_jax.tasks.KINDS`: "classification" (softmax), "binary" (one
      logit), "regression".
    classes: class names, encoded label i being `classes[i]`: at least two for
      classification; (negative, positive) for binary, (0, 1) if not given; none otherwise.
    loss: the name of one of the kind's losses (None: the kind's default), one of
      "cross_entropy" (classification), "binary_cross_entropy" (binary), "mse" (default),
      "l1", "huber" (regression, delta 1); or a callable `loss(outputs, labels, mask) ->
      per-element losses` (see `base.LossFn`) that replaces the kind's loss while its metrics
      are still reported. JSON keeps only a callable's name (`to_json`).
    label_shape: the shape of one example's label: () for one label, (k,) or (H, W) for
      element-wise labels, each element present or missing on its own.
  """
  name: str
  kind: str = CLASSIFICATION
  classes: tuple[Any, ...] = ()
  loss: str | Callable | None = None
  label_shape: tuple[int, ...] = ()

  def __post_init__(self):
    spec = registry.get_kind(self.kind, self.name)
    try:
      label_shape = tuple(int(d) for d in self.label_shape)
    except (TypeError, ValueError):
      raise ValueError(f"task {self.name!r}: label_shape must be a tuple of ints, got "
                       f"{self.label_shape!r}") from None
    object.__setattr__(self, "label_shape", label_shape)
    object.__setattr__(self, "classes", tuple(base.plain(c) for c in self.classes))
    object.__setattr__(self, "classes", tuple(spec.check(self)))
    loss = spec.default_loss if self.loss is None else self.loss
    if not callable(loss) and loss not in spec.losses:
      raise ValueError(f"task {self.name!r}: unknown loss {loss!r} for a {self.kind} task; "
                       f"known: {sorted(spec.losses)}, or a callable "
                       "loss(outputs, labels, mask)")
    object.__setattr__(self, "loss", loss)

  @property
  def kind_spec(self) -> base.Kind:
    """The registered `Kind` object of `kind`."""
    return registry.KINDS[self.kind]

  @property
  def is_classification(self) -> bool:
    """True for softmax classification only (not binary)."""
    return self.kind == CLASSIFICATION

  @property
  def output_shape(self) -> tuple[int, ...]:
    """One example's output: label_shape + (channels,), e.g. (C,), (1,), (H, W, C)."""
    return self.label_shape + (self.kind_spec.channels(self),)

  @property
  def output_size(self) -> int:
    """Width of a dense head's output layer: C logits, 1 logit or value, per label element."""
    return int(np.prod(self.output_shape))

  @property
  def missing_value(self) -> int | float:
    """The encoded label of a missing element: -1 (integer kinds) or NaN (float kinds)."""
    return self.kind_spec.missing_value

  @property
  def label_dtype(self) -> type:
    """np.int32 or np.float32: the dtype of encoded labels."""
    return self.kind_spec.label_dtype

  @property
  def loss_fn(self) -> base.LossFn:
    """The per-element loss: the callable given, or the kind's loss of that name."""
    return self.loss if callable(self.loss) else self.kind_spec.losses[self.loss]

  @property
  def loss_name(self) -> str:
    """The loss's name; a callable's `__name__` (or "custom" for a lambda)."""
    if not callable(self.loss):
      return self.loss
    name = getattr(self.loss, "__name__", CUSTOM_LOSS)
    return CUSTOM_LOSS if name == "<lambda>" else name

  def predictions(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """DataFrame columns {name: [N]} from the head's raw outputs [N, ...] (logits or values).

    Classification: "<task>" the most likely class name and "<task>/<class>" each class's
    softmax probability; binary: "<task>" the predicted class and "<task>/probability";
    regression: "<task>" the value. With element-wise labels each cell holds an array of
    `label_shape`.
    """
    outputs = np.asarray(outputs, np.float32)
    if int(np.prod(outputs.shape[1:])) != self.output_size:
      raise ValueError(f"task {self.name!r}: outputs of shape {outputs.shape} do not hold "
                       f"{self.output_size} values per example")
    channels = self.kind_spec.channels(self)
    shape = (len(outputs),) + self.label_shape + ((channels,) if channels > 1 else ())
    return self.kind_spec.predictions(self, outputs.reshape(shape))

  def to_json(self) -> dict:
    """A JSON-able dict. A callable loss is stored by name only, with "custom_loss": true."""
    out = {"name": self.name, "kind": self.kind, "classes": list(self.classes),
           "loss": self.loss_name, "label_shape": list(self.label_shape)}
    if callable(self.loss):
      out["custom_loss"] = True
    return out

  @classmethod
  def from_json(cls, d: Mapping[str, Any], loss: Callable | None = None) -> "Task":
    """The Task of `to_json`; `loss` is needed again if it was a callable (JSON lacks it).

    Raises ValueError naming the task when it had a callable loss and `loss` is None.
    """
    if d.get("custom_loss") and loss is None:
      raise ValueError(f"task {d['name']!r} was trained with the callable loss "
                       f"{d.get('loss')!r}, which JSON does not hold; pass it again as "
                       "Task.from_json(d, loss=...)")
    return cls(d["name"], d["kind"], tuple(d.get("classes", ())),
               loss if loss is not None else d.get("loss"), tuple(d.get("label_shape", ())))


def missing_mask(values: Sequence[Any]) -> np.ndarray:
  """True where a raw label is missing: None, NaN, or an empty string."""
  return base.missing_mask(values)


def infer_task(name: str, *label_sets: Sequence[Any], kind: str = CLASSIFICATION,
               loss: str | Callable | None = None) -> Task:
  """A Task from raw labels [N, *label_shape] of one or more splits.

  Classes: classification, the sorted distinct present labels of all sets (whole-number
  floats become ints); binary, see `mtl_jax.tasks.binary`. label_shape: the sets' shape past
  the first axis. Raises ValueError naming the task and the problem (unknown kind or loss,
  label shapes that differ, a binary task with three values, non-numeric regression labels).
  """
  spec = registry.get_kind(kind, name)
  arrays = [base.label_array(v) for v in label_sets]
  shapes = sorted({a.shape[1:] for a in arrays})
  if len(shapes) > 1:
    raise ValueError(f"task {name!r}: the label sets differ in shape per example: {shapes}")
  label_shape = shapes[0] if shapes else ()
  values = np.concatenate(arrays) if arrays else np.array([], object)
  return Task(name, kind, spec.infer_classes(name, values), loss, label_shape)


def encode(task: Task, values: Sequence[Any]) -> np.ndarray:
  """Raw labels [N, *label_shape] -> `task.label_dtype`, missing = `task.missing_value`."""
  raw = base.label_array(values)
  if raw.shape[1:] != task.label_shape:
    raise ValueError(f"task {task.name!r}: labels of shape {raw.shape} do not have the "
                     f"task's label_shape {task.label_shape} per example")
  return task.kind_spec.encode(task, raw)


def is_missing(task: Task, encoded: np.ndarray) -> np.ndarray:
  """True where an encoded label element is missing (same shape as `encoded`)."""
  encoded = np.asarray(encoded)
  return encoded < 0 if task.kind_spec.integer_labels else np.isnan(encoded)


def labelled_examples(task: Task, encoded: np.ndarray) -> np.ndarray:
  """bool[N]: whether each example has at least one present label element."""
  present = ~is_missing(task, encoded)
  return present.reshape(len(present), -1).any(axis=1)
