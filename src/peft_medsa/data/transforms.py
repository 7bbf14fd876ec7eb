"""The paper's preprocessing (Med-SA section 4.2), keeping what is needed to map predictions back.

2D: the long side is resized to the model's input size (1024 for ViT SAM, 256 for LiteMedSAM) and the image is
padded at the bottom and right to a square, as SAM does. `ResizeInfo` records the original size, the scale and
the padding; `restore_original_size` maps masks or logits back, and the point / box functions map prompts
forward and back.

3D: volumes can be resized to 128^3 (`resize_volume`, with `resized_spacing` / `resized_affine` for the
geometry). Intensities: CT windowing (`window_ct`), MRI normalisation inside the foreground (`normalize_mri`) and
MedSAM's image normalisation (`medsam_normalize`: grey -> RGB, min-max to ``[0, 1]``).

Coordinate conventions (as in segment-anything):
    - points are ``(x, y)`` pixel coordinates: ``x`` indexes columns (width), ``y`` rows (height);
    - boxes are XYXY: ``(x0, y0, x1, y1)`` with ``x0 <= x1`` and ``y0 <= y1``;
    - a point of the original image maps to the model input by ``x' = x * w / W``, ``y' = y * h / H`` where
      ``(H, W)`` is the original and ``(h, w)`` the resized (unpadded) size: SAM's ``ResizeLongestSide.apply_coords``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

SAM_IMAGE_SIZE = 1024
"""Input side of ViT SAM (B/L/H)."""

LITE_MEDSAM_IMAGE_SIZE = 256
"""Input side of LiteMedSAM (TinyViT encoder)."""

PAPER_VOLUME_SIZE = (128, 128, 128)
"""The paper resizes 3D volumes to 128 x 128 x 128 (``(D, H, W)``)."""

CT_ABDOMEN_WINDOW = (40.0, 400.0)
"""Abdominal soft-tissue CT window ``(level, width)`` in HU: ``[-160, 240]``."""


@dataclass(frozen=True)
class ResizeInfo:
    """How a 2D image was resized (long side to ``target_size``) and padded (bottom / right) to a square.

    Attributes:
        original_size: ``(H, W)`` of the original image.
        resized_size: ``(h, w)`` after resizing, before padding; ``max(h, w) == target_size``.
        target_size: side ``S`` of the padded square model input.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    target_size: int

    @property
    def scale(self) -> float:
        """Nominal scale ``S / max(H, W)`` (each axis is rounded to whole pixels, see `scale_xy`)."""
        return self.target_size / max(self.original_size)

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Exact per-axis scales ``(w / W, h / H)`` applied to ``(x, y)`` coordinates."""
        return self.resized_size[1] / self.original_size[1], self.resized_size[0] / self.original_size[0]

    @property
    def padding(self) -> tuple[int, int]:
        """``(pad_bottom, pad_right)`` in pixels of the model input."""
        return self.target_size - self.resized_size[0], self.target_size - self.resized_size[1]


def compute_resize(original_size: tuple[int, int], target_size: int) -> ResizeInfo:
    """The `ResizeInfo` of resizing an ``(H, W)`` image's long side to ``target_size`` (SAM's rounding)."""
    height, width = (int(v) for v in original_size)
    if height <= 0 or width <= 0 or target_size <= 0:
        raise ValueError(f"invalid sizes: original_size={original_size}, target_size={target_size}")
    scale = target_size / max(height, width)
    resized = (min(int(height * scale + 0.5), target_size), min(int(width * scale + 0.5), target_size))
    return ResizeInfo(original_size=(height, width), resized_size=resized, target_size=int(target_size))


def _interpolate(tensor: torch.Tensor, size: tuple[int, ...], mode: str) -> torch.Tensor:
    import torch.nn.functional as F

    if mode == "nearest":
        return F.interpolate(tensor, size=size, mode="nearest-exact")
    if len(size) == 3:
        return F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)


def _resize_spatial(array: np.ndarray | torch.Tensor, size: tuple[int, ...], mode: str, channels_last: bool):
    """Resize the spatial dims of a numpy array or tensor, keeping its type and dtype."""
    import torch

    is_numpy = isinstance(array, np.ndarray)
    if is_numpy:
        array = np.ascontiguousarray(array)
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    else:
        tensor = array
    dtype = tensor.dtype
    n = len(size)
    if channels_last:
        tensor = tensor.movedim(-1, 0)
    lead = tensor.shape[:-n]
    work = tensor.reshape(1, -1, *tensor.shape[-n:]).to(torch.float64 if dtype == torch.float64 else torch.float32)
    out = _interpolate(work, size, mode).reshape(*lead, *size)
    if channels_last:
        out = out.movedim(0, -1)
    if not dtype.is_floating_point:
        if dtype == torch.uint8:
            out = out.round().clamp(0, 255)
        out = out.round().to(dtype)
    else:
        out = out.to(dtype)
    return out.numpy() if is_numpy else out


def resize_longest_and_pad(
    image: np.ndarray,
    target_size: int = SAM_IMAGE_SIZE,
    *,
    is_mask: bool = False,
    pad_value: float = 0,
) -> tuple[np.ndarray, ResizeInfo]:
    """Resize the long side to ``target_size`` and pad bottom / right to ``(target_size, target_size)``.

    Images are resized bilinearly (antialiased when shrinking), masks / label maps with nearest neighbour so
    their values stay ids.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array (any numeric dtype; kept).
        target_size: model input side ``S`` (`SAM_IMAGE_SIZE` or `LITE_MEDSAM_IMAGE_SIZE`).
        is_mask: resize with nearest neighbour.
        pad_value: value of the padded pixels.

    Returns:
        The ``(S, S)`` or ``(S, S, C)`` array and the `ResizeInfo` needed to map back.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image has shape {image.shape}; expected (H, W) or (H, W, C)")
    info = compute_resize(image.shape[:2], target_size)
    resized = _resize_spatial(image, info.resized_size, "nearest" if is_mask else "linear", image.ndim == 3)
    pad_bottom, pad_right = info.padding
    widths = ((0, pad_bottom), (0, pad_right)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(resized, widths, mode="constant", constant_values=pad_value), info


def restore_original_size(
    prediction: np.ndarray | torch.Tensor,
    info: ResizeInfo,
    *,
    mode: Literal["linear", "nearest"] = "linear",
) -> np.ndarray | torch.Tensor:
    """Map masks or logits from model input space back to the original image (SAM's ``postprocess_masks``).

    The last two dims may be any square size ``(s, s)`` covering the padded input (e.g. the ``256 x 256``
    low-resolution logits of a 1024 model): they are resized to ``(S, S)``, the padding is cropped, and the
    result resized to ``(H, W)``.

    Args:
        prediction: ``(..., s, s)`` numpy array or tensor (logits: ``mode="linear"``; label maps or binary masks:
            ``mode="nearest"``, which keeps values and dtype).
        info: the `ResizeInfo` returned by `resize_longest_and_pad`.
        mode: ``"linear"`` (bilinear) or ``"nearest"``.

    Returns:
        ``(..., H, W)`` of the same type and dtype.
    """
    size = (info.target_size, info.target_size)
    if tuple(prediction.shape[-2:]) != size:
        prediction = _resize_spatial(prediction, size, mode, channels_last=False)
    height, width = info.resized_size
    cropped = prediction[..., :height, :width]
    return _resize_spatial(cropped, info.original_size, mode, channels_last=False)


def _coords(points: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    if isinstance(points, np.ndarray):
        return points.astype(np.float64, copy=True)
    if hasattr(points, "clone"):  # a tensor: keep float64, else compute in float32
        return points.clone() if points.dtype.is_floating_point else points.clone().float()
    return np.asarray(points, dtype=np.float64)


def points_to_input(points, info: ResizeInfo):
    """Map ``(x, y)`` points from the original image to model input space.

    Args:
        points: ``(..., 2)`` array or tensor of ``(x, y)`` pixel coordinates.
        info: the image's `ResizeInfo`.

    Returns:
        ``(..., 2)`` float coordinates in the padded ``S x S`` input.
    """
    out = _coords(points)
    scale_x, scale_y = info.scale_xy
    out[..., 0] = out[..., 0] * scale_x
    out[..., 1] = out[..., 1] * scale_y
    return out


def points_to_original(points, info: ResizeInfo):
    """Inverse of `points_to_input`: ``(..., 2)`` ``(x, y)`` input coordinates -> original image coordinates."""
    out = _coords(points)
    scale_x, scale_y = info.scale_xy
    out[..., 0] = out[..., 0] / scale_x
    out[..., 1] = out[..., 1] / scale_y
    return out


def boxes_to_input(boxes, info: ResizeInfo):
    """Map XYXY boxes ``(..., 4)`` = ``(x0, y0, x1, y1)`` from the original image to model input space."""
    boxes = _coords(boxes)
    corners = points_to_input(boxes.reshape(*boxes.shape[:-1], 2, 2), info)
    return corners.reshape(*boxes.shape[:-1], 4)


def boxes_to_original(boxes, info: ResizeInfo):
    """Inverse of `boxes_to_input`: XYXY boxes ``(..., 4)`` in input space -> original image coordinates."""
    boxes = _coords(boxes)
    corners = points_to_original(boxes.reshape(*boxes.shape[:-1], 2, 2), info)
    return corners.reshape(*boxes.shape[:-1], 4)


def resize_volume(
    volume: np.ndarray,
    size: tuple[int, int, int] = PAPER_VOLUME_SIZE,
    *,
    is_label: bool = False,
) -> np.ndarray:
    """Resize a ``(D, H, W)`` (or ``(C, D, H, W)``) volume to ``size`` = ``(D', H', W')``.

    Intensities are resized trilinearly, label maps with nearest neighbour (values kept). To map a prediction
    back, call it again with the original shape and ``is_label=True``. Geometry: `resized_spacing`,
    `resized_affine`.

    Returns:
        ``(D', H', W')`` (or ``(C, D', H', W')``) array of the input's dtype.
    """
    volume = np.asarray(volume)
    if volume.ndim not in (3, 4):
        raise ValueError(f"volume has shape {volume.shape}; expected (D, H, W) or (C, D, H, W)")
    size = tuple(int(s) for s in size)
    if tuple(volume.shape[-3:]) == size:
        return volume.copy()
    return _resize_spatial(volume, size, "nearest" if is_label else "linear", channels_last=False)


def resized_spacing(
    spacing: tuple[float, float, float], old_shape: tuple[int, int, int], new_shape: tuple[int, int, int]
) -> tuple[float, float, float]:
    """Voxel size ``(sz, sy, sx)`` after resizing a ``(D, H, W)`` volume from ``old_shape`` to ``new_shape``."""
    return tuple(float(s) * o / n for s, o, n in zip(spacing, old_shape, new_shape))  # type: ignore[return-value]


def resized_affine(affine: np.ndarray, old_shape: tuple[int, int, int], new_shape: tuple[int, int, int]) -> np.ndarray:
    """The affine of a resized volume, so that voxel centres stay in place (``align_corners=False``).

    Args:
        affine: ``(4, 4)`` matrix mapping ``(w, h, d, 1)`` to world mm (see `peft_medsa.data.io`).
        old_shape: ``(D, H, W)`` before resizing.
        new_shape: ``(D', H', W')`` after resizing.

    Returns:
        ``(4, 4)`` affine of the resized volume.
    """
    factors = np.asarray([o / n for o, n in zip(old_shape, new_shape)], dtype=np.float64)[::-1]  # (w, h, d)
    step = np.eye(4)
    step[:3, :3] = np.diag(factors)
    step[:3, 3] = 0.5 * factors - 0.5
    return np.asarray(affine, dtype=np.float64) @ step


def window_ct(hu: np.ndarray, level: float = CT_ABDOMEN_WINDOW[0], width: float = CT_ABDOMEN_WINDOW[1]) -> np.ndarray:
    """CT windowing: clip HU to ``[level - width / 2, level + width / 2]`` and scale to ``[0, 1]``.

    Args:
        hu: array of any shape in Hounsfield units.
        level: window level (centre), HU. Default 40 (abdomen).
        width: window width, HU. Default 400 (abdomen).

    Returns:
        float32 array of the same shape in ``[0, 1]``.
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = level - width / 2.0
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / width, 0.0, 1.0).astype(np.float32)


def normalize_mri(
    volume: np.ndarray,
    method: Literal["zscore", "percentile"] = "zscore",
    *,
    foreground: np.ndarray | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """MRI intensity normalisation computed within the foreground (the brain for skull-stripped BraTS).

    ``"zscore"``: ``(x - mean) / std`` of the foreground. ``"percentile"``: clip to the foreground's
    ``percentiles`` and min-max scale to ``[0, 1]``. Background voxels are set to 0 in both.

    Args:
        volume: array of any shape (``(D, H, W)`` or a slice).
        method: ``"zscore"`` or ``"percentile"``.
        foreground: boolean mask of ``volume``'s shape; default ``volume != 0``. When empty, the whole volume.
        percentiles: low and high percentiles for ``"percentile"``.

    Returns:
        float32 array of ``volume``'s shape.
    """
    volume = np.asarray(volume, dtype=np.float32)
    mask = (volume != 0) if foreground is None else np.asarray(foreground, dtype=bool)
    if mask.shape != volume.shape:
        raise ValueError(f"foreground has shape {mask.shape}; expected the volume's shape {volume.shape}")
    if not mask.any():
        mask = np.ones_like(mask)
    values = volume[mask]
    if method == "zscore":
        out = (volume - values.mean()) / max(float(values.std()), 1e-8)
    elif method == "percentile":
        low, high = np.percentile(values, percentiles)
        out = np.clip((volume - low) / max(float(high - low), 1e-8), 0.0, 1.0)
    else:
        raise ValueError(f"method={method!r}; expected 'zscore' or 'percentile'")
    return np.where(mask, out, 0.0).astype(np.float32)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` -> ``(H, W, 3)`` (grey replicated, alpha dropped)."""
    image = np.asarray(image)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    if image.ndim == 3 and image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return image[..., :3]
    raise ValueError(f"image has shape {image.shape}; expected (H, W) or (H, W, 1|3|4)")


def medsam_normalize(image: np.ndarray) -> np.ndarray:
    """MedSAM's image normalisation: grey -> RGB, then min-max over the whole image to ``[0, 1]``.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array.

    Returns:
        ``(H, W, 3)`` float32 in ``[0, 1]`` (all zeros for a constant image).
    """
    rgb = to_rgb(image).astype(np.float32)
    low, high = float(rgb.min()), float(rgb.max())
    return ((rgb - low) / max(high - low, 1e-8)).astype(np.float32)


def to_uint8(image01: np.ndarray) -> np.ndarray:
    """``[0, 1]`` floats -> ``np.uint8`` in ``[0, 255]`` (clipped, rounded)."""
    return np.round(np.clip(np.asarray(image01, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def preprocess_medsam(image: np.ndarray, target_size: int = LITE_MEDSAM_IMAGE_SIZE) -> tuple[np.ndarray, ResizeInfo]:
    """LiteMedSAM's image pipeline: RGB, resize long side to ``target_size``, min-max to ``[0, 1]``, pad.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` image (``np.uint8`` or float).
        target_size: model input side (256 for LiteMedSAM, 1024 for ViT SAM).

    Returns:
        ``(S, S, 3)`` float32 in ``[0, 1]`` (padding 0) and its `ResizeInfo`.
    """
    resized, info = resize_longest_and_pad(to_rgb(image), target_size)
    height, width = info.resized_size
    out = np.zeros_like(resized, dtype=np.float32)
    out[:height, :width] = medsam_normalize(resized[:height, :width])
    return out, info


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _unit_range(array: np.ndarray) -> np.ndarray:
    """Pixels -> float32 in [0, 1]: uint8 / 255; other integers and floats outside [0, 1] min-max scaled."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    out = array.astype(np.float32)
    low, high = float(out.min()), float(out.max())
    if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return out
    return (out - low) / max(high - low, 1e-8)


def model_pixels(
    image: np.ndarray,
    size: int,
    normalization: str = "imagenet",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, ResizeInfo]:
    """``(H, W[, C])`` image -> ``(1, 3, S, S)`` float32 pixel values and the `ResizeInfo` to map back.

    Resize the long side to ``S`` (bilinear, antialiased), normalise the resized image (``"imagenet"``: [0, 1] then
    ``(x - mean) / std``; ``"minmax"``: min-max to [0, 1] as MedSAM; ``"none"``: values unchanged), pad with 0.
    The one preprocessing of model inputs: the predictor, the evaluation protocol and the training loop all use it.
    """
    import torch

    if normalization not in ("imagenet", "minmax", "none"):
        raise ValueError(f"normalization={normalization!r}; expected 'imagenet', 'minmax' or 'none'")
    rgb = to_rgb(image)
    pixels = rgb.astype(np.float32) if normalization == "none" else _unit_range(rgb)
    padded, info = resize_longest_and_pad(pixels, size)
    height, width = info.resized_size
    region = padded[:height, :width]
    if normalization == "imagenet":
        region = (region - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    elif normalization == "minmax":
        low, high = float(region.min()), float(region.max())
        region = (region - low) / max(high - low, 1e-8)
    out = np.zeros_like(padded)
    out[:height, :width] = region
    return torch.from_numpy(out).permute(2, 0, 1)[None].contiguous(), info
