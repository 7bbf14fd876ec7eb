"""Overlay PNGs for humans: the image, the mask in colour with its contour, and the prompt (Pillow only).

Points are ``(x, y)`` pixels (positive clicks: green crosses in a ring; negative: red), boxes XYXY (yellow
rectangle). Label maps get one colour per label. Files are written atomically (temp file + rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..atomic import atomic_write
from ..data.transforms import to_rgb

__all__ = ["draw_overlay", "save_png", "to_display_uint8"]

PALETTE = np.array(
    [[255, 64, 64], [64, 160, 255], [255, 200, 0], [160, 64, 255], [0, 200, 120], [255, 120, 200], [120, 255, 255]],
    dtype=np.float32,
)


def to_display_uint8(image: np.ndarray) -> np.ndarray:
    """Any ``(H, W[, C])`` image -> ``(H, W, 3)`` uint8 for display (non-uint8 images min-max scaled)."""
    rgb = to_rgb(np.asarray(image))
    if rgb.dtype == np.uint8:
        return rgb
    values = rgb.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    return np.round((values - low) / max(high - low, 1e-8) * 255.0).astype(np.uint8)


def draw_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    points: Any = None,
    point_labels: Any = None,
    box: Any = None,
    alpha: float = 0.45,
):
    """The image with ``labels`` (``(H, W)`` bool mask or int label map) in colour, contours and the prompt.

    Returns:
        A PIL RGB image of the image's size.
    """
    from PIL import Image, ImageDraw

    base = to_display_uint8(image).astype(np.float32)
    labels = np.asarray(labels)
    if labels.shape != base.shape[:2]:
        raise ValueError(f"mask of shape {labels.shape} for an image of shape {base.shape[:2]}")
    labels = labels.astype(np.int64)
    for value in np.unique(labels[labels > 0]):
        region = labels == value
        colour = PALETTE[(int(value) - 1) % len(PALETTE)]
        base[region] = (1 - alpha) * base[region] + alpha * colour
        contour = region & ~ndimage.binary_erosion(region)
        base[contour] = colour
    pil = Image.fromarray(np.round(base).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    size = max(3, round(max(pil.size) / 80))
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in np.asarray(box).reshape(4))
        draw.rectangle([x0, y0, x1, y1], outline=(255, 230, 0), width=max(1, size // 3))
    if points is not None:
        coords = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        flags = np.ones(len(coords), int) if point_labels is None else np.asarray(point_labels).reshape(-1)
        for (x, y), flag in zip(coords, flags):
            colour = (0, 230, 0) if flag == 1 else (255, 0, 0)
            draw.ellipse([x - size, y - size, x + size, y + size], outline=colour, width=max(1, size // 3))
            draw.line([x - size, y, x + size, y], fill=colour, width=1)
            draw.line([x, y - size, x, y + size], fill=colour, width=1)
    return pil


def save_png(image: Any, path: str | Path) -> Path:
    """Saves a PIL image or an array as PNG atomically (temp file in the same folder, then rename).

    Raises:
        ValueError: ``path`` does not end in ``.png``.
    """
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"output {path}: expected a .png path")
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    return atomic_write(path, lambda temporary: pil.save(temporary, format="PNG"))
