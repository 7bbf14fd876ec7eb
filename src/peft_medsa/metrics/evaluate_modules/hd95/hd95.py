"""HD95 (95th-percentile Hausdorff distance) as a local ``evaluate`` module (``evaluate.load("<path>/hd95")``).

The computation is :func:`peft_medsa.metrics.compute_hd95`; this file only adapts it to ``evaluate``'s API.
"""

from __future__ import annotations

import evaluate
import numpy as np

from peft_medsa.metrics import compute_hd95
from peft_medsa.metrics.evaluate_support import mask_features, summarise

_DESCRIPTION = """95th-percentile symmetric Hausdorff distance between the surfaces of predicted and ground-truth
masks (2D (H, W) or 3D (D, H, W)), in the units of `spacing` (mm for 3D volumes with spacing (sz, sy, sx); pixels
when no spacing is given). Same definition as MONAI's HausdorffDistanceMetric(percentile=95). Both masks empty ->
`empty_score` (NaN, skipped by the mean); exactly one empty -> `one_empty_score` (inf, kept in the mean)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of masks or label maps, each (H, W) or (D, H, W).
    references: list of ground-truth masks or label maps, same shapes.
    spacing: voxel size per axis in array order, shared by all cases (scalar = isotropic; default 1 = pixels).
    spacings: optional list with one spacing per case (overrides `spacing`).
    labels: optional list of class values for label maps; default scores the binary foreground (non-zero).
    percentile: percentile in [0, 100] (default 95).
    empty_score: distance when a class is empty on both sides (default NaN).
    one_empty_score: distance when exactly one side is empty (default inf).
Returns:
    hd95: mean over cases (and classes) ignoring NaN.
    per_case_hd95: one value per case (a list per case when `labels` is given).
    per_class_hd95: mean per class (only when `labels` is given).
Examples:
    >>> hd95 = evaluate.load("path/to/evaluate_modules/hd95")
    >>> hd95.compute(predictions=[[[1, 0, 0]]], references=[[[0, 0, 1]]])["hd95"]
    2.0
"""

_CITATION = """@article{huttenlocher1993comparing, title={Comparing images using the Hausdorff distance},
author={Huttenlocher, Daniel P and Klanderman, Gregory A and Rucklidge, William J}, journal={IEEE TPAMI},
volume={15}, number={9}, pages={850--863}, year={1993}}"""



@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HD95(evaluate.Metric):
    """95th-percentile Hausdorff distance for 2D and 3D segmentation masks."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=mask_features(),
        )

    def _compute(
        self,
        predictions,
        references,
        spacing=None,
        spacings=None,
        labels=None,
        percentile=95.0,
        empty_score=float("nan"),
        one_empty_score=float("inf"),
    ):
        if spacings is not None and len(spacings) != len(predictions):
            raise ValueError(f"spacings has {len(spacings)} entries for {len(predictions)} cases")
        per_case = []
        for i, (p, r) in enumerate(zip(predictions, references)):
            case_spacing = spacing if spacings is None else spacings[i]
            per_case.append(
                compute_hd95(
                    np.asarray(p),
                    np.asarray(r),
                    spacing=case_spacing,
                    labels=labels,
                    percentile=percentile,
                    empty_score=empty_score,
                    one_empty_score=one_empty_score,
                )
            )
        return summarise("hd95", per_case, labels)
