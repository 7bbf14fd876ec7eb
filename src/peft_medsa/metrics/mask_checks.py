"""What a mask given to the metrics (or returned by a ``predict_fn``) may hold.

Masks are boolean, 0/1, or integer label maps. A float mask may only hold whole numbers: NaN (which ``astype(bool)``
turns into foreground) and fractional values (probabilities, which would all count as foreground) are refused, with
the advice to threshold them first.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_mask_values"]


def check_mask_values(mask: np.ndarray, what: str) -> np.ndarray:
    """Returns ``mask`` as an array after refusing NaN / inf and fractional (probability) values.

    Raises:
        ValueError: naming ``what`` and the offending values.
    """
    mask = np.asarray(mask)
    if mask.dtype.kind not in "fc":
        return mask
    finite = np.isfinite(mask)
    if not finite.all():
        raise ValueError(f"{what} has {int((~finite).sum())} NaN or infinite value(s); expected a binary mask")
    if not np.all(mask == np.round(mask)):
        raise ValueError(
            f"{what} has fractional values (e.g. {float(mask[mask != np.round(mask)].flat[0]):.3g}): probabilities or "
            "logits, not a mask; threshold them first (e.g. probabilities > 0.5)"
        )
    return mask
