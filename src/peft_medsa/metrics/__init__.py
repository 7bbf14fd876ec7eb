"""Segmentation metrics: Dice, IoU and HD95, as functions, a stateful accumulator and local ``evaluate`` modules.

The functional API (``compute_dice``, ``compute_iou``, ``compute_hd95``) lives in :mod:`.overlap` and
:mod:`.hausdorff`; :class:`SegmentationMetrics` accumulates their per-case, per-class results like MONAI's
cumulative metrics. The ``evaluate`` modules load offline with ``evaluate.load(evaluate_module_path("dice"))``.

Empty masks: both empty -> NaN (``empty_score``); Dice/IoU with exactly one side empty -> 0.0; HD95 with exactly
one side empty -> ``inf`` (``one_empty_score``). Averages skip NaN (``np.nanmean``) and keep ``inf``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .hausdorff import compute_hd95, mask_surface, surface_distances
from .overlap import binary_masks, compute_dice, compute_iou

__all__ = [
    "METRIC_NAMES",
    "SegmentationMetrics",
    "binary_masks",
    "compute_dice",
    "compute_hd95",
    "compute_iou",
    "evaluate_module_path",
    "mask_surface",
    "surface_distances",
]

METRIC_NAMES = ("dice", "iou", "hd95")


def evaluate_module_path(name: str) -> str:
    """Folder of the local ``evaluate`` module ``name`` (``"dice"``, ``"iou"`` or ``"hd95"``) for ``evaluate.load``."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown evaluate module {name!r}; available: {METRIC_NAMES}")
    return str(Path(__file__).parent / "evaluate_modules" / name)


def _label_table(labels: Mapping[int, str] | Sequence[int] | None) -> dict[int | None, str]:
    if labels is None:
        return {None: "foreground"}
    if isinstance(labels, Mapping):
        return {int(k): str(v) for k, v in labels.items()}
    return {int(k): str(int(k)) for k in labels}


class SegmentationMetrics:
    """Stateful Dice / IoU / HD95 accumulator over cases and classes.

    Each :meth:`update` scores one case (a 2D image or a 3D volume) for every class and stores one record per
    class; :meth:`aggregate` averages over cases with ``np.nanmean`` (cases whose class is empty on both sides are
    NaN and skipped; an HD95 of ``inf`` is kept).

    Args:
        labels: ``None`` for binary masks (one class named ``"foreground"``); a sequence of label values; or a
            mapping ``{label value: class name}`` for label maps (e.g. BTCV organs).
        spacing: Default voxel size per axis in array order (``(sz, sy, sx)`` mm for 3D); ``None`` means pixels.
        empty_score: Score of every metric when a class is empty in both prediction and ground truth.
        one_empty_score: HD95 when exactly one side is empty (Dice and IoU are 0.0 then).

    Example:
        >>> metric = SegmentationMetrics(labels={1: "spleen", 2: "liver"}, spacing=(2.0, 1.0, 1.0))
        >>> rows = metric.update(pred_volume, gt_volume, case_id="img0001")  # doctest: +SKIP
        >>> metric.aggregate()["spleen"]["dice"]  # doctest: +SKIP
    """

    def __init__(
        self,
        labels: Mapping[int, str] | Sequence[int] | None = None,
        spacing: float | Sequence[float] | None = None,
        empty_score: float = float("nan"),
        one_empty_score: float = float("inf"),
    ) -> None:
        self.labels = _label_table(labels)
        self.spacing = spacing
        self.empty_score = empty_score
        self.one_empty_score = one_empty_score
        self._records: list[dict] = []
        self._num_cases = 0

    def __len__(self) -> int:
        return self._num_cases

    @property
    def records(self) -> list[dict]:
        """Per-case, per-class rows ``{"case_id", "class", "dice", "iou", "hd95"}`` in update order."""
        return [dict(r) for r in self._records]

    def reset(self) -> None:
        """Forgets every accumulated case."""
        self._records.clear()
        self._num_cases = 0

    def update(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        case_id: str | None = None,
        spacing: float | Sequence[float] | None = None,
    ) -> list[dict]:
        """Scores one case for every class and stores the rows.

        Args:
            pred: Prediction, shape ``(H, W)`` or ``(D, H, W)``; binary, or a label map when ``labels`` is set.
            gt: Ground truth, same shape.
            case_id: Name of the case; defaults to ``"case_<n>"``.
            spacing: Voxel size for this case; defaults to the constructor's ``spacing``.

        Returns:
            The new rows, one per class.
        """
        case_id = f"case_{self._num_cases}" if case_id is None else str(case_id)
        spacing = self.spacing if spacing is None else spacing
        rows = []
        for label, name in self.labels.items():
            p, g = binary_masks(pred, gt, label)
            rows.append(
                {
                    "case_id": case_id,
                    "class": name,
                    "dice": compute_dice(p, g, empty_score=self.empty_score),
                    "iou": compute_iou(p, g, empty_score=self.empty_score),
                    "hd95": compute_hd95(
                        p, g, spacing, empty_score=self.empty_score, one_empty_score=self.one_empty_score
                    ),
                }
            )
        self._records.extend(rows)
        self._num_cases += 1
        return [dict(r) for r in rows]

    def aggregate(self) -> dict[str, dict[str, float]]:
        """Mean of each metric over cases, per class: ``{class: {"dice", "iou", "hd95", "n_cases"}}``.

        ``n_cases`` counts the cases where the class was scored (Dice not NaN); a class with none has NaN means.
        """
        result: dict[str, dict[str, float]] = {}
        for name in self.labels.values():
            rows = [r for r in self._records if r["class"] == name]
            summary: dict[str, float] = {}
            for metric in METRIC_NAMES:
                values = np.array([r[metric] for r in rows], dtype=np.float64)
                valid = values[~np.isnan(values)]
                summary[metric] = float(valid.mean()) if valid.size else math.nan
            summary["n_cases"] = int(sum(not math.isnan(r["dice"]) for r in rows))
            result[name] = summary
        return result
