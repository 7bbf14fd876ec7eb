"""Mask shape: targets that annotators draw as ellipses, and the ellipse fitted to a predicted mask.

Coordinates: masks are ``(H, W)`` arrays, rows ``y`` and columns ``x``, in the image's original pixels.

Some annotation protocols do not trace a boundary but draw an ellipse: the optic disc and optic cup of ORIGA (and of
REFUGE) are ellipses, so a mask traced along the image's evidence loses Dice against them however good it is. An
adapter trained on such masks records ``mask_shape="ellipse"`` in its :class:`~peft_medsa.MedSAConfig`, and
:class:`~peft_medsa.inference.predictor.MedSAPredictor` then returns the ellipse fitted to each predicted mask.

The trainer decides from the training masks alone (:func:`infer_mask_shape`, ``TrainingConfig.mask_shape="auto"``):
the masks count as drawn ellipses when their median Dice with their own fitted ellipses (:func:`ellipse_agreement`)
is at least :data:`ELLIPSE_AGREEMENT` (0.98). On the four real 2D sets of ``benchmarks/``, ORIGA's disc and cup masks
agree to 0.998-0.999, ISIC lesions and DDTI nodules to a median of 0.95 (``benchmarks/README.md``, "Masks drawn as
ellipses"; the first 32 non-empty training masks are looked at, :func:`mask_shape_of_data`).

The fit is the ellipse with the same centroid and second moments as the largest connected component of the mask (a
uniformly filled ellipse with semi-axes ``a``, ``b`` has variances ``a**2 / 4`` and ``b**2 / 4`` along them, so the
ellipse is ``{p : (p - mu)^T C^-1 (p - mu) <= 4}`` for the component's centroid ``mu`` and covariance ``C``). It is
rotated with the mask, needs no optimisation, and returns a filled ellipse of about the mask's area. It applies to 2D
boolean masks (``MedSAPredictor.predict``); volumes and logits are left as predicted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

MASK_SHAPES = ("ellipse",)
"""Shapes an adapter's ``mask_shape`` may name (``None``: the masks as the model predicts them)."""

ELLIPSE_AGREEMENT = 0.98
"""Median Dice of the training masks with their own fitted ellipses from which they count as drawn as ellipses."""

SAMPLES = 32
"""How many non-empty training masks (the first ones) :func:`mask_shape_of_data` looks at."""

MIN_PIXELS = 6
"""Masks (largest components) smaller than this are returned unchanged: too few pixels for a second moment."""


def check_mask_shape(mask_shape: Any, what: str = "mask_shape") -> str | None:
    """``mask_shape`` if it is ``None`` or one of :data:`MASK_SHAPES`; else a ``ValueError`` naming ``what``."""
    if mask_shape is not None and mask_shape not in MASK_SHAPES:
        raise ValueError(f"{what}={mask_shape!r} is not supported; expected None (masks as predicted) or one of "
                         f"{list(MASK_SHAPES)}")
    return mask_shape


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a ``(H, W)`` bool mask (the mask itself when it has at most one)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.reshape(-1))[1:]
    return labels == 1 + int(np.argmax(sizes))


def ellipse_moments(mask: np.ndarray) -> tuple[float, float, np.ndarray] | None:
    """Centroid ``(cx, cy)`` and ``(2, 2)`` covariance (order ``x, y``) of the largest connected component of a
    ``(H, W)`` mask; ``None`` when it has fewer than :data:`MIN_PIXELS` pixels or lies on a line (no area to fit)."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"an ellipse is fitted to one (H, W) mask, got shape {mask.shape}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    top, left = int(rows[0]), int(cols[0])  # components are found in the mask's bounding box only
    ys, xs = np.nonzero(largest_component(mask[top : rows[-1] + 1, left : cols[-1] + 1]))
    if len(xs) < MIN_PIXELS:
        return None
    ys, xs = ys + top, xs + left
    cx, cy = float(xs.mean()), float(ys.mean())
    dx, dy = xs - cx, ys - cy
    cov = np.array([[np.mean(dx * dx), np.mean(dx * dy)], [np.mean(dx * dy), np.mean(dy * dy)]])
    if np.linalg.det(cov) <= 1e-9 * max(float(np.trace(cov)), 1.0) ** 2:
        return None
    return cx, cy, cov


def draw_ellipse(shape: tuple[int, int], cx: float, cy: float, cov: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: the filled ellipse ``{p : (p - (cx, cy))^T cov^-1 (p - (cx, cy)) <= 4}`` judged at pixel
    centres, clipped to the image (``cov``: ``(2, 2)``, order ``x, y``)."""
    inverse = np.linalg.inv(cov)
    # the ellipse's bounding box: |x - cx| <= 2 sqrt(C_xx), |y - cy| <= 2 sqrt(C_yy); only that window is evaluated
    height, width = shape
    half_x, half_y = 2 * np.sqrt(cov[0, 0]) + 1, 2 * np.sqrt(cov[1, 1]) + 1
    x0, x1 = max(int(np.floor(cx - half_x)), 0), min(int(np.ceil(cx + half_x)) + 1, width)
    y0, y1 = max(int(np.floor(cy - half_y)), 0), min(int(np.ceil(cy + half_y)) + 1, height)
    out = np.zeros(shape, dtype=bool)
    if x1 <= x0 or y1 <= y0:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1]
    px, py = xx - cx, yy - cy
    out[y0:y1, x0:x1] = inverse[0, 0] * px * px + 2 * inverse[0, 1] * px * py + inverse[1, 1] * py * py <= 4.0
    return out


def fit_ellipse(mask: np.ndarray) -> np.ndarray:
    """The filled ellipse with the centroid and second moments of the mask's largest connected component.

    Args:
        mask: ``(H, W)`` bool (or 0 / 1) mask; rows are ``y``, columns ``x``.

    Returns:
        ``(H, W)`` bool: the ellipse, clipped to the image; the mask unchanged (as bool) when its largest component
        has fewer than :data:`MIN_PIXELS` pixels or lies on a line (no area to fit).
    """
    mask = np.asarray(mask).astype(bool)
    moments = ellipse_moments(mask)
    if moments is None:
        return mask
    return draw_ellipse(mask.shape, *moments)


def apply_mask_shape(masks: np.ndarray, mask_shape: str | None) -> np.ndarray:
    """``masks`` ``(..., H, W)`` bool with every ``(H, W)`` mask replaced by its shape (``None``: unchanged)."""
    check_mask_shape(mask_shape)
    if mask_shape is None:
        return masks
    masks = np.asarray(masks, dtype=bool)
    flat = masks.reshape(-1, *masks.shape[-2:])
    return np.stack([fit_ellipse(m) for m in flat]).reshape(masks.shape)


def ellipse_agreement(mask: np.ndarray) -> float:
    """Dice of a ``(H, W)`` mask with its fitted ellipse (:func:`fit_ellipse`): 1.0 for a drawn ellipse; NaN for an
    empty mask."""
    mask = np.asarray(mask).astype(bool)
    total = int(mask.sum())
    if total == 0:
        return float("nan")
    ellipse = fit_ellipse(mask)
    return 2.0 * float(np.logical_and(mask, ellipse).sum()) / (total + int(ellipse.sum()))


def infer_mask_shape(masks: Iterable[np.ndarray], threshold: float = ELLIPSE_AGREEMENT) -> str | None:
    """``"ellipse"`` when the median :func:`ellipse_agreement` of the non-empty ``masks`` is at least ``threshold``,
    else ``None`` (also for no non-empty mask)."""
    scores = [s for s in (ellipse_agreement(m) for m in masks) if np.isfinite(s)]
    if not scores:
        return None
    return "ellipse" if float(np.median(scores)) >= threshold else None


def mask_shape_of_data(data: Any, limit: int = SAMPLES, indices: Iterable[int] | None = None) -> str | None:
    """:func:`infer_mask_shape` of the first ``limit`` non-empty masks of training ``data`` (a sequence of samples
    with a ``(H, W)`` ``"mask"``, or a ``datasets.Dataset``, read through its ``mask`` column one row at a time).

    ``indices``: the rows to look at, in order (the trainer passes its known non-empty ones, so that no mask is read
    twice); ``None``: every row."""
    from .data.columns import mask_rows  # here: importing peft_medsa.mask_shape stays light

    masks = mask_rows(data)
    found = []
    for i in range(len(masks)) if indices is None else indices:
        mask = np.asarray(masks[int(i)]["mask"])
        if mask.any():
            found.append(mask > 0)
            if len(found) >= limit:
                break
    return infer_mask_shape(found)


__all__ = [
    "ELLIPSE_AGREEMENT",
    "MASK_SHAPES",
    "apply_mask_shape",
    "check_mask_shape",
    "ellipse_agreement",
    "fit_ellipse",
    "infer_mask_shape",
    "largest_component",
    "mask_shape_of_data",
]
