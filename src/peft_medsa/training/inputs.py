"""From 2D samples to SamModel training inputs: resize + pad + normalise, and the simulated start prompts.

Geometry follows :func:`peft_medsa.evaluation.sam_predict_fn` so that training and validation see the same inputs:
the long side is resized to the model input size ``S``, the image is normalised, then zero-padded at the
bottom/right to ``(S, S)``. Prompts are computed on the resized mask, so they are in model input pixels ((x, y)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..data.transforms import model_pixels, resize_longest_and_pad
from ..model_input import model_input_size
from ..prompts import Prompt, jitter_box, positive_points, tight_box


def prepare_sample(sample: Mapping, size: int, normalization: str) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
    """One 2D sample -> model pixels, model-space mask and the size of the unpadded region.

    Args:
        sample: ``image`` ``(H, W, 3)`` or ``(H, W)`` (uint8 in [0, 255], or float in [0, 1] for ``"imagenet"``),
            ``mask`` ``(H, W)`` binary, ``case_id``.
        size: Model input side ``S``.
        normalization: ``"imagenet"`` or ``"minmax"``.

    Returns:
        ``pixel_values`` float32 ``(3, S, S)``, ``mask`` bool ``(S, S)`` (nearest-neighbour resized, padded with 0)
        and ``(h, w)``, the resized image's size inside the padding.

    Raises:
        ValueError: If image and mask sizes differ or the image has NaN / inf pixels, naming the case.
    """
    case_id = sample.get("case_id", "?")
    image = np.asarray(sample["image"])
    mask = np.asarray(sample["mask"])
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ValueError(f"sample {case_id!r}: image has {int((~np.isfinite(image)).sum())} NaN or infinite pixel(s)")
    if image.ndim != 3 or image.shape[:2] != mask.shape:
        raise ValueError(f"sample {case_id!r}: image shape {image.shape} does not match mask shape {mask.shape}")
    if normalization not in ("imagenet", "minmax"):
        raise ValueError(f"normalization must be 'imagenet' or 'minmax', got {normalization!r}")
    pixels, info = model_pixels(image, size, normalization)
    h, w = info.resized_size
    out = pixels[0]
    model_mask, _ = resize_longest_and_pad((mask > 0).astype(np.uint8), size, is_mask=True)
    return out, model_mask.astype(bool), (h, w)


def mirror_sample(sample: Mapping) -> dict:
    """``sample`` mirrored left-right: ``image`` ``(H, W[, C])`` and ``mask`` ``(H, W)`` flipped along ``W`` together
    (a training augmentation; prompts are drawn afterwards, on the mirrored mask). Other keys are kept."""
    out = dict(sample)
    out["image"] = np.ascontiguousarray(np.asarray(sample["image"])[:, ::-1])
    out["mask"] = np.ascontiguousarray(np.asarray(sample["mask"])[:, ::-1])
    return out


def start_prompts(
    masks: list[np.ndarray],
    rng: np.random.Generator,
    initial_clicks: int,
    box_probability: float,
    box_iou: float,
    sample_rngs: Sequence[np.random.Generator] | None = None,
    box_iou_max: float | None = None,
) -> list[Prompt]:
    """Random start prompts for a micro-batch (paper section 3.5: random clicks, then corrective ones).

    With probability ``box_probability`` every image gets a box of IoU ``box_iou`` with its tight box (one choice per
    micro-batch, since SAM batches either all or no boxes); otherwise 1 to ``initial_clicks`` positive clicks.
    With ``box_iou_max``, the micro-batch's IoU is drawn uniformly from ``[box_iou, box_iou_max]`` (1 = the tight
    box), so that the model learns loose and tight boxes alike.

    Args:
        masks: ``(S, S)`` bool model-space masks, each non-empty.
        rng: The micro-batch's generator (box or clicks).
        sample_rngs: One generator per mask for its clicks or box jitter (default: ``rng`` for all).

    Returns:
        One :class:`~peft_medsa.prompts.Prompt` per mask, in model input pixels.
    """
    use_box = box_probability > 0 and rng.random() < box_probability
    if use_box and box_iou_max is not None:
        box_iou = float(rng.uniform(box_iou, box_iou_max))
    prompts = []
    for i, mask in enumerate(masks):
        own = rng if sample_rngs is None else sample_rngs[i]
        if use_box:
            box = tight_box(mask)
            if box_iou < 0.999:
                box = jitter_box(box, box_iou, own, mask.shape)
            prompts.append(Prompt(box=box))
        else:
            n = int(own.integers(1, initial_clicks + 1))
            prompts.append(Prompt(positive_points(mask, n, own), np.ones(n, dtype=np.int64)))
    return prompts


__all__ = ["mirror_sample", "model_input_size", "prepare_sample", "start_prompts"]
