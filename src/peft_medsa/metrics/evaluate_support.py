"""What the local ``evaluate`` modules (``metrics/evaluate_modules/{dice,iou,hd95}``) share: input features and the
summary of per-case scores. Each module file only holds its texts and calls its metric function."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np


def mask_features() -> list[datasets.Features]:
    """Accepted inputs: 2D (H, W) or 3D (D, H, W) integer masks / label maps for predictions and references."""
    features = []
    for ndim in (2, 3):
        feature = datasets.Value("int64")
        for _ in range(ndim):
            feature = datasets.List(feature)
        features.append(datasets.Features({"predictions": feature, "references": feature}))
    return features


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean ignoring NaN (NaN where every value is NaN); ``inf`` is kept."""
    valid = ~np.isnan(values)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    count = valid.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def summarise(name: str, per_case: Sequence, labels: Sequence | None) -> dict:
    """``{name: mean, "per_case_<name>": [...], "per_class_<name>": [...] (with labels)}`` from per-case scores."""
    values = np.asarray(per_case, dtype=np.float64)
    result = {name: float(nanmean(values.ravel())), f"per_case_{name}": values.tolist()}
    if labels is not None:
        result[f"per_class_{name}"] = [float(v) for v in nanmean(values, axis=0)]
    return result
