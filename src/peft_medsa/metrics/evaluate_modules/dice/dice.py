"""Dice coefficient as a local ``evaluate`` module (loads offline with ``evaluate.load("<path>/dice")``).

The computation is :func:`peft_medsa.metrics.compute_dice`; this file only adapts it to ``evaluate``'s API.
"""

from __future__ import annotations

import evaluate
import numpy as np

from peft_medsa.metrics import compute_dice
from peft_medsa.metrics.evaluate_support import mask_features, summarise

_DESCRIPTION = """Dice coefficient 2|P & G| / (|P| + |G|) between predicted and ground-truth segmentation masks
(2D (H, W) or 3D (D, H, W)). A case whose class is empty in both prediction and ground truth scores `empty_score`
(NaN by default, skipped by the mean); a non-empty prediction against an empty ground truth scores 0."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of masks or label maps, each (H, W) or (D, H, W).
    references: list of ground-truth masks or label maps, same shapes.
    labels: optional list of class values for label maps; default scores the binary foreground (non-zero).
    empty_score: score when a class is empty on both sides (default NaN).
Returns:
    dice: mean over cases (and classes) ignoring NaN.
    per_case_dice: one value per case (a list per case when `labels` is given).
    per_class_dice: mean per class (only when `labels` is given).
Examples:
    >>> dice = evaluate.load("path/to/evaluate_modules/dice")
    >>> dice.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [1, 0]]])["dice"]
    0.8
"""

_CITATION = """@article{dice1945measures, title={Measures of the amount of ecologic association between species},
author={Dice, Lee R}, journal={Ecology}, volume={26}, number={3}, pages={297--302}, year={1945}}"""



@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Dice(evaluate.Metric):
    """Dice coefficient for 2D and 3D segmentation masks."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=mask_features(),
        )

    def _compute(self, predictions, references, labels=None, empty_score=float("nan")):
        per_case = [
            compute_dice(np.asarray(p), np.asarray(r), labels=labels, empty_score=empty_score)
            for p, r in zip(predictions, references)
        ]
        return summarise("dice", per_case, labels)
