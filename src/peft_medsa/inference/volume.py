"""Whole-volume segmentation with SD-Trans (Wu et al., section 3.3): a 3D volume through a 2D SAM-like model.

:func:`segment_volume` feeds the slices of a volume to the model together, ``num_slices`` at a time, so that an
SD-Trans model's depth branch sees its neighbours; long volumes go in chunks of ``chunk_size`` slices that overlap by
``overlap`` slices, and the logits of a slice covered by several chunks are averaged. Peak memory is set by
``chunk_size``, not by the depth of the volume. Models without SD-Trans layers get each chunk as a batch of 2D images.

Axes and coordinates (as :mod:`peft_medsa.inference.volume_io`): an array volume is ``(D, H, W)`` or
``(C, D, H, W)``; slice ``d`` is ``volume[..., d, :, :]``. A nibabel image's voxel ``(i, j, k)`` is ``(w, h, d)``, so
its data is transposed to ``(D, H, W)`` and the labels are transposed back. Prompts are in ORIGINAL slice pixels:
points ``(x, y)`` with ``x`` the column and ``y`` the row, boxes XYXY ``(x0, y0, x1, y1)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .predictor import IMAGENET_MEAN, IMAGENET_STD, default_normalization, model_input_size

NORMALIZATIONS = ("auto", "imagenet", "minmax", "none")


def chunk_starts(depth: int, chunk_size: int, overlap: int) -> list[int]:
    """First slice of each chunk: chunks of ``min(chunk_size, depth)`` slices, consecutive ones sharing ``overlap``
    slices (the last chunk is aligned with the end of the volume, so it may share more)."""
    size = min(chunk_size, depth)
    step = chunk_size - overlap
    starts = list(range(0, depth - size + 1, step))
    if starts[-1] + size < depth:
        starts.append(depth - size)
    return starts


def uses_num_slices(model: torch.nn.Module) -> bool:
    """Whether ``model`` has SD-Trans layers, i.e. takes ``num_slices`` in its forward."""
    return any("num_slices" in getattr(module, "call_kwargs", ()) for module in model.modules())


def _volume_array(volume: Any) -> tuple[np.ndarray, Any]:
    """``volume`` -> (``(C, D, H, W)`` float32 array, the nibabel image or ``None``)."""
    image = None
    if hasattr(volume, "affine") and hasattr(volume, "dataobj"):  # a nibabel image: voxel (w, h, d)
        image = volume
        data = np.asanyarray(volume.dataobj)
        if data.ndim != 3:
            raise ValueError(f"volume: a NIfTI image of shape {data.shape}; expected a 3D image (w, h, d)")
        array = data.T[None]
    elif isinstance(volume, torch.Tensor):
        array = volume.detach().cpu().numpy()
    else:
        array = np.asarray(volume)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[0] not in (1, 3):
        raise ValueError(
            f"volume has shape {tuple(np.shape(volume))}; expected (D, H, W) or (C, D, H, W) with C = 1 or 3, "
            "or a 3D nibabel image"
        )
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"volume has dtype {array.dtype}; expected real numbers")
    return array.astype(np.float32, copy=False), image


def _prompt_array(name: str, value: Any, depth: int, expected: str, ndim: int, last: int | None) -> np.ndarray | None:
    """Per-slice prompts -> float array of ``ndim`` dims ``(D, K, ...)``; a missing object axis K is added."""
    if value is None:
        return None
    array = np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    shape = array.shape
    if array.ndim == ndim - 1:
        array = array[:, None]
    if array.ndim != ndim or array.shape[0] != depth or (last is not None and array.shape[-1] != last):
        raise ValueError(f"{name} has shape {shape}; expected {expected} with D = {depth} slices")
    return array


def _normalize(array: np.ndarray, normalization: str) -> np.ndarray:
    """``(C, D, H, W)`` -> 3 channels, normalised over the whole volume (same intensity mapping on every slice)."""
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    if normalization == "none":
        return array
    low, high = float(array.min()), float(array.max())
    array = (array - low) / max(high - low, 1e-8)
    if normalization == "imagenet":
        mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None, None]
        std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None, None]
        array = (array - mean) / std
    return array


@torch.no_grad()
def segment_volume(
    model: torch.nn.Module,
    volume: Any,
    *,
    boxes: Any = None,
    points: Any = None,
    point_labels: Any = None,
    chunk_size: int = 16,
    overlap: int = 4,
    normalization: str = "auto",
    image_size: int | None = None,
    max_depth: int = 2048,
    return_logits: bool = False,
) -> Any:
    """Segments a whole volume with per-slice prompts; each prompted object gets its own label.

    Args:
        model: a SAM-like model with transformers' ``SamModel`` interface (``SamModel``, LiteMedSAM, or a
            ``PeftModel`` on either, with or without SD-Trans).
        volume: ``(D, H, W)`` or ``(C, D, H, W)`` (C = 1 or 3) array / tensor, or a 3D nibabel image.
        boxes: ``(D, K, 4)`` (or ``(D, 4)`` for K = 1) XYXY boxes in slice pixels, one per object and slice; an all-NaN
            row means the object is absent from that slice.
        points: ``(D, K, P, 2)`` (or ``(D, P, 2)``) ``(x, y)`` clicks; all-NaN means absent.
        point_labels: ``(D, K, P)`` (or ``(D, P)``): 1 positive, 0 negative; default all positive.
        chunk_size: slices per forward (and per depth-attention context).
        overlap: slices shared by consecutive chunks; their logits are averaged.
        normalization: ``"imagenet"`` (ViT SAM), ``"minmax"`` ([0, 1], MedSAM / LiteMedSAM), ``"none"``, or
            ``"auto"`` (by model type). Min-max runs over the whole volume.
        image_size: model input side S; default read from the model's config.
        max_depth: refuse volumes with more slices (a guard against a wrong axis order).
        return_logits: also return the averaged logits ``(D, K, H, W)`` (``-inf`` where an object is absent).

    Returns:
        The label volume aligned with the input: ``(D, H, W)`` integers (0 background, k for the k-th object;
        a voxel takes the object of highest logit among those above 0), or for a nibabel input a ``Nifti1Image`` of
        the input's shape with the same affine and header. With ``return_logits``: ``(labels, logits)``.

    Raises:
        ValueError: a malformed volume (wrong shape, one slice, more than ``max_depth`` slices, non-finite voxels),
            prompts of the wrong shape or missing, or bad chunking / normalisation arguments; each message names the
            argument.
    """
    array, image = _volume_array(volume)
    channels, depth, height, width = array.shape
    if depth < 2:
        raise ValueError(
            f"volume has a single slice (shape {tuple(np.shape(volume))}); segment_volume needs D >= 2 slices: for "
            "a 2D image call the model (or MedSAPredictor) directly, or check the axis order"
        )
    if depth > max_depth:
        raise ValueError(
            f"volume has {depth} slices, more than max_depth={max_depth} (shape {tuple(np.shape(volume))}): check "
            "the axis order ((D, H, W), slices first) or raise max_depth"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"volume has {int((~np.isfinite(array)).sum())} non-finite voxel(s) (NaN or inf)")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got chunk_size={chunk_size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < chunk_size:
        raise ValueError(f"overlap must be an integer in [0, chunk_size={chunk_size}), got overlap={overlap!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r} is not supported; expected one of {list(NORMALIZATIONS)}")
    box_array = _prompt_array("boxes", boxes, depth, "(D, K, 4) or (D, 4)", 3, 4)
    point_array = _prompt_array("points", points, depth, "(D, K, P, 2) or (D, P, 2)", 4, 2)
    if box_array is None and point_array is None:
        raise ValueError("give prompts: boxes (D, K, 4) and/or points (D, K, P, 2), per slice")
    num_objects = (box_array if box_array is not None else point_array).shape[1]
    if box_array is not None and point_array is not None and point_array.shape[1] != num_objects:
        raise ValueError(f"boxes has {num_objects} objects per slice but points has {point_array.shape[1]}")
    labels_array = None
    if point_array is not None:
        labels_array = _prompt_array("point_labels", point_labels, depth, "(D, K, P) or (D, P)", 3, None)
        if labels_array is None:
            labels_array = np.ones(point_array.shape[:3])
        if labels_array.shape != point_array.shape[:3]:
            raise ValueError(f"point_labels has shape {labels_array.shape}; expected {point_array.shape[:3]}")

    size = int(image_size or model_input_size(model))
    if normalization == "auto":
        normalization = "minmax" if default_normalization(model) == "minmax" else "imagenet"
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    factors = np.asarray([new_w / width, new_h / height])
    present = np.ones((depth, num_objects), dtype=bool)
    if box_array is not None:
        present &= ~np.isnan(box_array).all(-1)
    if point_array is not None:
        present &= ~np.isnan(point_array).all((-1, -2))

    slices = torch.from_numpy(np.ascontiguousarray(_normalize(array, normalization).transpose(1, 0, 2, 3)))
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    logit_sum = torch.zeros(depth, num_objects, height, width)
    counts = torch.zeros(depth, 1, 1, 1)
    sd_trans = uses_num_slices(model)
    for start in chunk_starts(depth, chunk_size, overlap):
        stop = start + min(chunk_size, depth)
        pixels = F.interpolate(slices[start:stop], size=(new_h, new_w), mode="bilinear", antialias=True)
        pixels = F.pad(pixels, (0, size - new_w, 0, size - new_h))
        inputs: dict[str, Any] = {"pixel_values": pixels.to(device, dtype), "multimask_output": False}
        if box_array is not None:
            chunk = box_array[start:stop] * np.tile(factors, 2)
            chunk[~present[start:stop]] = (0, 0, new_w, new_h)  # placeholder prompt; its output is discarded
            inputs["input_boxes"] = torch.as_tensor(chunk, dtype=dtype, device=device)
        if point_array is not None:
            chunk = point_array[start:stop] * factors
            chunk[~present[start:stop]] = (new_w / 2, new_h / 2)
            inputs["input_points"] = torch.as_tensor(chunk, dtype=dtype, device=device)
            inputs["input_labels"] = torch.as_tensor(labels_array[start:stop], dtype=torch.long, device=device)
        if sd_trans:
            inputs["num_slices"] = stop - start
        logits = model(**inputs).pred_masks[:, :, 0].float().cpu()  # (n, K, h, w) low-resolution logits
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
        logits = F.interpolate(logits[..., :new_h, :new_w], size=(height, width), mode="bilinear", align_corners=False)
        logit_sum[start:stop] += logits
        counts[start:stop] += 1
    logits = logit_sum / counts
    logits[torch.from_numpy(~present)] = float("-inf")
    best, index = logits.max(dim=1)
    labels = torch.where(best > 0, index + 1, 0).numpy().astype(np.uint8 if num_objects < 255 else np.int32)
    result: Any = labels
    if image is not None:
        import nibabel as nib

        header = image.header.copy()
        header.set_data_dtype(labels.dtype)
        result = nib.Nifti1Image(np.ascontiguousarray(labels.T), image.affine, header)
    return (result, logits) if return_logits else result


__all__ = ["chunk_starts", "segment_volume", "uses_num_slices"]
