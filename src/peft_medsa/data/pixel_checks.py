"""Image contents the readers refuse instead of silently misreading them.

- Several frames (animated GIF, multi-page TIFF): reading only the first would drop the rest without a word; split
  the file into one image per frame (or save the stack as NIfTI) instead.
- NaN or infinite pixels / voxels in float data: min-max or percentile normalisation of such an array gives a
  constant image (one NaN poisons the min and the max).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check_finite_pixels", "check_single_frame"]


def check_single_frame(pil: Any, path: Path) -> None:
    """Refuses a PIL image with more than one frame.

    Raises:
        DataLayoutError: naming the file and its number of frames.
    """
    frames = int(getattr(pil, "n_frames", 1) or 1)
    if frames > 1:
        from .io import DataLayoutError

        raise DataLayoutError(
            f"{path}: {frames} frames (animated GIF or multi-page TIFF); expected a single 2D image: save one file "
            "per frame, or a volume as NIfTI"
        )


def check_finite_pixels(array: np.ndarray, path: Path) -> np.ndarray:
    """Returns ``array`` after refusing NaN or infinite values in float data.

    Raises:
        DataLayoutError: naming the file and how many values are not finite.
    """
    if array.dtype.kind in "fc":
        finite = np.isfinite(array)
        if not finite.all():
            from .io import DataLayoutError

            raise DataLayoutError(
                f"{path}: {int((~finite).sum())} NaN or infinite value(s) of {array.size}; expected finite "
                "intensities (replace them, e.g. with the background value, before segmenting)"
            )
    return array
