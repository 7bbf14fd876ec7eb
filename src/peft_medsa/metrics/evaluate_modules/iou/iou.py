"""Intersection over union (Jaccard index) as a local ``evaluate`` module (``evaluate.load("<path>/iou")``).

The computation is :func:`peft_medsa.metrics.compute_iou`; this file only adapts it to ``evaluate``'s API.
"""

from __future__ import annotations

import evaluate
import numpy as np

from peft_medsa.metrics import compute_iou
from peft_medsa.metrics.evaluate_support import mask_features, summarise

_DESCRIPTION = """Intersection over union |P & G| / |P | G| between predicted and ground-truth segmentation masks
(2D (H, W) or 3D (D, H, W)). A case whose class is empty in both prediction and ground truth scores `empty_score`
(NaN by default, skipped by the mean); a non-empty prediction against an empty ground truth scores 0."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of masks or label maps, each (H, W) or (D, H, W).
    references: list of ground-truth masks or label maps, same shapes.
    labels: optional list of class values for label maps; default scores the binary foreground (non-zero).
    empty_score: score when a class is empty on both sides (default NaN).
Returns:
    iou: mean over cases (and classes) ignoring NaN.
    per_case_iou: one value per case (a list per case when `labels` is given).
    per_class_iou: mean per class (only when `labels` is given).
Examples:
    >>> iou = evaluate.load("path/to/evaluate_modules/iou")
    >>> iou.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [1, 0]]])["iou"]
    0.6666666666666666
"""

_CITATION = """@article{jaccard1912distribution, title={The distribution of the flora in the alpine zone},
author={Jaccard, Paul}, journal={New Phytologist}, volume={11}, number={2}, pages={37--50}, year={1912}}"""



@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class IoU(evaluate.Metric):
    """Intersection over union for 2D and 3D segmentation masks."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=mask_features(),
        )

    def _compute(self, predictions, references, labels=None, empty_score=float("nan")):
        per_case = [
            compute_iou(np.asarray(p), np.asarray(r), labels=labels, empty_score=empty_score)
            for p, r in zip(predictions, references)
        ]
        return summarise("iou", per_case, labels)
