"""Binary training samples from label maps: one sample per (slice or image, target), lazily.

Benchmark builders store masks as label maps (BTCV organs 1-13, REFUGE2 rim / cup, BraTS 1 / 2 / 4); Med-SA trains
one prompt -> one binary mask. :class:`TargetSamples` presents a dataset of label maps as a sequence of binary
samples for the targets of a :class:`~peft_medsa.data.labels.LabelSpec` (``spec.targets()``: regions such as
REFUGE2's optic disc = rim + cup, or each class alone), keeping only the targets present in each mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..data.columns import mask_rows
from ..data.labels import LabelSpec


class TargetSamples(Sequence):
    """A sequence of 2D binary samples ``{"image", "mask" (H, W) uint8 0/1, "case_id": "<id>/<target>", ...}``.

    Args:
        data: 2D samples with ``mask`` label maps (a list of dicts or a ``datasets.Dataset``).
        spec: The benchmark's labels.
        targets: Target names to keep (default: all of ``spec.targets()``); unknown names raise ``ValueError``.
    """

    def __init__(self, data: Sequence[Mapping], spec: LabelSpec, targets: Sequence[str] | None = None) -> None:
        available = spec.targets()
        names = list(targets) if targets is not None else list(available)
        unknown = [t for t in names if t not in available]
        if unknown:
            raise ValueError(f"unknown target(s) {unknown} for {spec.name}; available: {list(available)}")
        self.data, self.targets = data, {t: available[t] for t in names}
        masks = mask_rows(data)
        self.index: list[tuple[int, str]] = []
        for row in range(len(masks)):
            values = np.unique(np.asarray(masks[row]["mask"]))
            self.index.extend((row, t) for t, ids in self.targets.items() if np.isin(ids, values).any())

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        row, target = self.index[i]
        sample = dict(self.data[row])
        mask = np.isin(np.asarray(sample["mask"]), self.targets[target]).astype(np.uint8)
        slice_index = sample.get("slice_index")
        case_id = str(sample.get("case_id", row)) + (f"_z{slice_index}" if slice_index is not None else "")
        # The binary mask is the target alone: its label names say so, or evaluation would re-derive the regions.
        return {**sample, "image": np.asarray(sample["image"]), "mask": mask, "case_id": f"{case_id}/{target}",
                "target": target, "label_names": ["background", target]}


__all__ = ["TargetSamples"]
