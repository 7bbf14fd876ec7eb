"""Box fit: a predicted mask made to span a tight box prompt.

A box drawn tightly around an object states the object's extent: it touches the object on all four sides (boxes
taken from detection labels or from existing masks, the protocol's "tight box"). A model's mask often stops a few
pixels short of a faint border or runs over it, although the box said where the border is. When the caller states
that its boxes are tight (``MedSAPredictor(box_fit=...)``, ``peft-medsa predict --box-fit``), the mask is made to
span the box:

- :func:`stretch_to_box`: the mask is scaled along ``x`` and ``y`` (nearest neighbour) so that its bounding box is the
  box, for any target;
- :func:`ellipse_to_box`: for targets drawn as ellipses (``mask_shape="ellipse"``, :mod:`peft_medsa.mask_shape`), the
  ellipse fitted to the mask, scaled along ``x`` and ``y`` about the box's centre so that its extent is the box's (a
  box without rotation keeps the ellipse's tilt: the correlation of ``x`` and ``y`` is unchanged).

Only for tight boxes: a loose box (drawn with a margin, or the protocol's boxes jittered to IoU 0.75 or 0.5 with the
tight box) would stretch the mask to the wrong extent, and nothing in a prediction tells the two apart reliably:
the IoU of the mask's own box with the prompt box (:func:`extent_agreement`) overlaps between tight and jittered
boxes on the real sets (``benchmarks/README.md``, "Masks made to span a tight box"). So the fit is off by default.

Coordinates: masks are ``(H, W)`` arrays, rows ``y`` and columns ``x``, in the image's original pixels. Boxes are XYXY
``(x0, y0, x1, y1)`` in the same pixels with inclusive corners, as :func:`peft_medsa.prompts.tight_box` gives them:
the box covers ``[x0 - 0.5, x1 + 0.5] x [y0 - 0.5, y1 + 0.5]``; float corners are rounded to the nearest pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .mask_shape import draw_ellipse, ellipse_moments

BOX_FITS = ("stretch", "ellipse")
"""Fits a ``box_fit`` may name (``None``: masks as predicted)."""


def check_box_fit(value: Any, name: str = "box_fit") -> None:
    """Raises ``ValueError`` unless ``value`` is ``None`` or one of :data:`BOX_FITS`."""
    if value is not None and value not in BOX_FITS:
        raise ValueError(f"{name}={value!r}; expected None (masks as predicted) or one of {BOX_FITS}")


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """The ``(4,)`` XYXY inclusive bounding box of a ``(H, W)`` mask's pixels, ``None`` for an empty mask."""
    from .prompts import tight_box

    mask = np.asarray(mask).astype(bool)
    return tight_box(mask).astype(np.int64) if mask.any() else None


def _pixel_box(box: Any, shape: tuple[int, int]) -> np.ndarray:
    """``box`` rounded to whole pixels and clipped to an image of ``shape`` ``(H, W)``: ``(4,)`` int XYXY."""
    box = np.rint(np.asarray(box, dtype=np.float64).reshape(4)).astype(np.int64)
    height, width = shape
    x0, x1 = np.clip([box[0], box[2]], 0, width - 1)
    y0, y1 = np.clip([box[1], box[3]], 0, height - 1)
    return np.array([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)])


def extent_agreement(mask: np.ndarray, box: Any) -> float:
    """IoU (inclusive pixel boxes, :func:`peft_medsa.prompts.box_iou`) of a mask's bounding box with ``box``; 0 for an
    empty mask."""
    from .prompts import box_iou

    own = mask_box(mask)
    if own is None:
        return 0.0
    return float(box_iou(own, _pixel_box(box, np.shape(mask))))


def stretch_to_box(mask: np.ndarray, box: Any) -> np.ndarray:
    """The mask scaled along ``x`` and ``y`` so that its bounding box becomes ``box``.

    Each pixel centre of the box is mapped linearly onto the mask's bounding box (pixel areas
    ``[x0 - 0.5, x1 + 0.5]`` onto each other) and takes the value of the pixel it lands in. Returns a ``(H, W)`` bool
    mask, empty outside the box; an empty mask is returned unchanged.
    """
    mask = np.asarray(mask).astype(bool)
    own = mask_box(mask)
    if own is None:
        return mask
    bx0, by0, bx1, by1 = _pixel_box(box, mask.shape)

    def source(lo: int, hi: int, src_lo: int, src_hi: int) -> np.ndarray:
        fraction = (np.arange(lo, hi + 1) - lo + 0.5) / (hi - lo + 1)  # pixel centres of the box, in (0, 1)
        return np.clip(np.floor(src_lo - 0.5 + fraction * (src_hi - src_lo + 1) + 0.5), src_lo, src_hi).astype(int)

    xs, ys = source(bx0, bx1, own[0], own[2]), source(by0, by1, own[1], own[3])
    out = np.zeros_like(mask)
    out[by0 : by1 + 1, bx0 : bx1 + 1] = mask[np.ix_(ys, xs)]
    return out


def ellipse_to_box(mask: np.ndarray, box: Any) -> np.ndarray:
    """The ellipse fitted to the mask (:func:`peft_medsa.mask_shape.ellipse_moments`), centred on ``box`` and scaled
    along ``x`` and ``y`` so that its extent is the box's: semi-axes ``(x1 - x0 + 1) / 2`` and ``(y1 - y0 + 1) / 2``
    along the image axes, the tilt (correlation of ``x`` and ``y``) kept. An unrotated fit gives the ellipse inscribed
    in the box. A mask too small to fit is stretched instead (:func:`stretch_to_box`)."""
    mask = np.asarray(mask).astype(bool)
    moments = ellipse_moments(mask)
    if moments is None:
        return stretch_to_box(mask, box)
    _, _, cov = moments
    x0, y0, x1, y1 = _pixel_box(box, mask.shape)
    half_x, half_y = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
    correlation = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    # the ellipse {p^T C^-1 p <= 4} reaches |x| = 2 sqrt(C_xx): variances (half / 2)^2 put its extent on the box
    scaled = np.array([[half_x**2, correlation * half_x * half_y], [correlation * half_x * half_y, half_y**2]]) / 4
    return draw_ellipse(mask.shape, (x0 + x1) / 2, (y0 + y1) / 2, scaled)


def fit_to_box(mask: np.ndarray, box: Any, fit: str | None) -> np.ndarray:
    """``mask`` made to span the tight ``box`` by ``fit`` (:func:`stretch_to_box` for ``"stretch"``,
    :func:`ellipse_to_box` for ``"ellipse"``), or unchanged (as bool) with ``fit=None``; an empty mask stays empty."""
    check_box_fit(fit)
    if fit is None:
        return np.asarray(mask).astype(bool)
    return stretch_to_box(mask, box) if fit == "stretch" else ellipse_to_box(mask, box)


__all__ = ["BOX_FITS", "check_box_fit", "ellipse_to_box", "extent_agreement", "fit_to_box", "mask_box",
           "stretch_to_box"]
