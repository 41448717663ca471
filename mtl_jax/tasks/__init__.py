"""Tasks: what each model output is trained for, and how its labels are encoded.

    Task("digit", "classification", classes=("0", ..., "9"))
    Task("smiling", "binary")                                  # one logit, classes (0, 1)
    Task("age", "regression", loss="huber")
    Task("depth", "regression", label_shape=(64, 64))          # element-wise labels
    Task("seg", "segmentation", tuple(range(13)), label_shape=(288, 384))   # per-pixel kinds:
    Task("depth", "depth", label_shape=(288, 384))                          # segmentation,
    Task("normals", "normals", label_shape=(288, 384, 3))                   # depth, normals

A task's kind (`KINDS`, one file per kind, see `base.Kind`) owns its label encoding, the head's
output width, its per-element loss, metrics, KPI and prediction columns.
"""

from mtl_jax.tasks.base import Kind, LossFn, label_array
from mtl_jax.tasks.clu_metrics import BinnedAUC, RootMeanSquare
from mtl_jax.tasks.registry import KINDS, get_kind
from mtl_jax.tasks.task import (BINARY, CLASSIFICATION, CUSTOM_LOSS, MISSING_CLASS, REGRESSION,
                                Task, encode, infer_task, is_missing, labelled_examples,
                                missing_mask)

__all__ = ["BINARY", "BinnedAUC", "CLASSIFICATION", "CUSTOM_LOSS", "KINDS", "Kind", "LossFn",
           "MISSING_CLASS", "REGRESSION", "RootMeanSquare", "Task", "encode", "get_kind",
           "infer_task", "is_missing", "label_array", "labelled_examples", "missing_mask"]
