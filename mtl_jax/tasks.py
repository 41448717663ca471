"""Tasks and label encoding: missing labels become -1 (classification) or NaN (regression)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import pandas as pd

CLASSIFICATION = "classification"
REGRESSION = "regression"
MISSING_CLASS = -1


@dataclasses.dataclass(frozen=True)
class Task:
  """One prediction target: its name, kind and (for classification) its class names."""
  name: str
  kind: str = CLASSIFICATION
  classes: tuple[Any, ...] = ()

  def __post_init__(self):
    if self.kind not in (CLASSIFICATION, REGRESSION):
      raise ValueError(f"task {self.name!r}: kind must be {CLASSIFICATION!r} or "
                       f"{REGRESSION!r}, got {self.kind!r}")
    if self.kind == CLASSIFICATION and len(self.classes) < 2:
      raise ValueError(f"task {self.name!r} has {len(self.classes)} class(es); "
                       "classification needs at least 2")

  @property
  def is_classification(self) -> bool:
    return self.kind == CLASSIFICATION

  @property
  def output_size(self) -> int:
    """Width of the head's output layer: one logit per class, or one value."""
    return len(self.classes) if self.is_classification else 1

  def to_json(self) -> dict:
    return {"name": self.name, "kind": self.kind, "classes": [_plain(c) for c in self.classes]}

  @classmethod
  def from_json(cls, d: dict) -> "Task":
    return cls(d["name"], d["kind"], tuple(d["classes"]))


def _plain(value):
  """A JSON-serialisable Python scalar for a numpy scalar."""
  return value.item() if isinstance(value, np.generic) else value


def missing_mask(values: Sequence[Any]) -> np.ndarray:
  """True where a raw label is missing: None, NaN, or an empty string."""
  values = pd.Series(np.asarray(values, dtype=object))
  return (values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())).to_numpy()


def infer_task(name: str, *label_sets: Sequence[Any], kind: str = CLASSIFICATION) -> Task:
  """A Task whose classes are the sorted distinct non-missing labels of all `label_sets`."""
  if kind == REGRESSION:
    return Task(name, REGRESSION)
  present = [np.asarray(v, dtype=object)[~missing_mask(v)] for v in label_sets]
  classes = pd.unique(np.concatenate(present)) if present else np.array([])
  try:
    classes = sorted(classes)
  except TypeError:  # mixed types: order by their text
    classes = sorted(classes, key=str)
  return Task(name, CLASSIFICATION, tuple(_plain(c) for c in classes))


def encode(task: Task, values: Sequence[Any]) -> np.ndarray:
  """Raw labels -> int32 class indices (-1 missing) or float32 targets (NaN missing)."""
  missing = missing_mask(values)
  raw = np.asarray(values, dtype=object)
  if not task.is_classification:
    out = np.full(len(raw), np.nan, np.float32)
    try:
      out[~missing] = raw[~missing].astype(np.float32)
    except (TypeError, ValueError):
      raise ValueError(f"task {task.name!r} is a regression task but has non-numeric "
                       "labels") from None
    return out
  codes = pd.Categorical([_plain(v) for v in raw], categories=list(task.classes)).codes
  unknown = (codes < 0) & ~missing
  if unknown.any():
    raise ValueError(f"task {task.name!r}: label {_plain(raw[np.argmax(unknown)])!r} is not "
                     f"one of its classes {task.classes}")
  return np.where(missing, MISSING_CLASS, codes).astype(np.int32)


def is_missing(task: Task, encoded: np.ndarray) -> np.ndarray:
  """True where an encoded label is missing."""
  return encoded < 0 if task.is_classification else np.isnan(encoded)
