"""Overlap metrics: Dice and IoU (Jaccard) for binary masks and label maps.

Conventions (shared with :mod:`peft_medsa.metrics.hausdorff`, the one place that defines what an empty mask scores):

- Inputs are numpy arrays (or anything ``np.asarray`` accepts, e.g. CPU tensors) of any spatial rank, 2D ``(H, W)``
  or 3D ``(D, H, W)``; prediction and ground truth must have the same shape.
- Binary mode (``labels=None``): every non-zero voxel is foreground.
- Label-map mode (``labels=[1, 2, ...]``): class ``c`` is ``array == c``; the result has one entry per label.
- Empty ground truth AND empty prediction: the score is undefined and returns ``empty_score`` (NaN by default, so
  that averages with ``np.nanmean`` skip the case; never a silent 1.0).
- Empty ground truth but non-empty prediction (or the reverse): 0.0, every predicted voxel is a false positive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .mask_checks import check_mask_values

__all__ = ["binary_masks", "compute_dice", "compute_iou"]


def binary_masks(pred: np.ndarray, gt: np.ndarray, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns boolean foreground masks of ``pred`` and ``gt`` for one class.

    Args:
        pred: Prediction, shape ``(H, W)`` or ``(D, H, W)``, binary or a label map.
        gt: Ground truth, same shape as ``pred``.
        label: Class value to select (``array == label``); ``None`` means "any non-zero value".

    Returns:
        Two boolean arrays of the input shape.

    Raises:
        ValueError: If the shapes differ, or a float mask holds NaN or fractional values (probabilities).
    """
    pred = check_mask_values(pred, "prediction")
    gt = check_mask_values(gt, "ground truth")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth must have the same shape, got {pred.shape} and {gt.shape}")
    if label is None:
        return pred.astype(bool), gt.astype(bool)
    return pred == label, gt == label


def _overlap(pred: np.ndarray, gt: np.ndarray, kind: str, empty_score: float) -> float:
    intersection = float(np.count_nonzero(pred & gt))
    total = float(np.count_nonzero(pred)) + float(np.count_nonzero(gt))
    if total == 0.0:
        return float(empty_score)
    if kind == "dice":
        return 2.0 * intersection / total
    return intersection / (total - intersection)


def _per_label(
    pred: np.ndarray, gt: np.ndarray, labels: Sequence[int] | None, kind: str, empty_score: float
) -> float | np.ndarray:
    if labels is None:
        return _overlap(*binary_masks(pred, gt), kind, empty_score)
    return np.array([_overlap(*binary_masks(pred, gt, int(c)), kind, empty_score) for c in labels], dtype=np.float64)


def compute_dice(
    pred: np.ndarray, gt: np.ndarray, labels: Sequence[int] | None = None, empty_score: float = float("nan")
) -> float | np.ndarray:
    """Dice coefficient ``2 |P & G| / (|P| + |G|)``.

    Args:
        pred: Predicted mask or label map, shape ``(H, W)`` or ``(D, H, W)``.
        gt: Ground-truth mask or label map, same shape.
        labels: Class values to score in label-map mode; ``None`` scores the binary foreground.
        empty_score: Returned when both prediction and ground truth are empty for a class (default NaN).

    Returns:
        A float in binary mode, else a float64 array of shape ``(len(labels),)``. A non-empty prediction against
        an empty ground truth scores 0.0.

    Raises:
        ValueError: If the shapes differ.
    """
    return _per_label(pred, gt, labels, "dice", empty_score)


def compute_iou(
    pred: np.ndarray, gt: np.ndarray, labels: Sequence[int] | None = None, empty_score: float = float("nan")
) -> float | np.ndarray:
    """Intersection over union (Jaccard index) ``|P & G| / |P | G|``.

    Args:
        pred: Predicted mask or label map, shape ``(H, W)`` or ``(D, H, W)``.
        gt: Ground-truth mask or label map, same shape.
        labels: Class values to score in label-map mode; ``None`` scores the binary foreground.
        empty_score: Returned when both prediction and ground truth are empty for a class (default NaN).

    Returns:
        A float in binary mode, else a float64 array of shape ``(len(labels),)``. A non-empty prediction against
        an empty ground truth scores 0.0.

    Raises:
        ValueError: If the shapes differ.
    """
    return _per_label(pred, gt, labels, "iou", empty_score)
