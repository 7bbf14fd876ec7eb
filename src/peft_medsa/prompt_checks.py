"""Validation of the prompts given to a SAM call: clear errors instead of silently wrong masks.

SAM's prompt encoder accepts NaN clicks, clicks far outside the image, boxes with swapped corners and labels of the
wrong shape without complaint. These checks read tensor values (``.any()``, ``.all()``: a host-device synchronisation
each), so they run once at the API boundaries (the predictor, the volume helper, the CLI through them, and
``check_model_call`` for code that calls ``model(...)`` itself), never inside the model's forward.

Conventions (as in ``peft_medsa.prompts``): points are (x, y) pixel coordinates and boxes XYXY, both in the model
input space ``[0, image_size]``; labels are 1 (foreground), 0 (background), -1 (not a point) or -10 (padding, ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

VALID_LABELS = (1, 0, -1, -10)
PADDING_LABEL = -10
EMPTY_PROMPT_ERROR = (
    "HyP-Adpt conditions the mask decoder on the prompt, but this call has none: pass input_points (with "
    "input_labels) or input_boxes, or use prompt_conditioning='none'"
)
# positional order of SamModel.forward's first arguments
SAM_CALL_ORDER = ("pixel_values", "input_points", "input_labels", "input_boxes")


def _finite(name: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).nonzero()[0].tolist()
        raise ValueError(f"{name} has a NaN or infinite value at index {tuple(bad)}; prompts must be finite numbers")


def _inside(name: str, coords: torch.Tensor, image_size: int | None, what: str) -> None:
    if image_size is None or coords.numel() == 0:
        return
    outside = (coords < 0) | (coords > image_size)
    if outside.any():
        index = outside.nonzero()[0].tolist()
        raise ValueError(
            f"{name} has {what} {coords[tuple(index[:-1])].tolist()} outside the model input [0, {image_size}] "
            f"(index {tuple(index[:-1])}); give coordinates in model input pixels, after resizing and padding"
        )


def check_prompts(
    input_points: torch.Tensor | None = None,
    input_labels: torch.Tensor | None = None,
    input_boxes: torch.Tensor | None = None,
    image_size: int | None = None,
    require_prompt: bool = False,
) -> None:
    """Raises ``ValueError`` naming the argument when the prompts of a SamModel call are malformed.

    Args:
        input_points: (B, point_batch, N, 2) (x, y) clicks in model input pixels.
        input_labels: (B, point_batch, N) labels in {1, 0, -1, -10}; -10 marks padding points (not range-checked).
        input_boxes: (B, point_batch, 4) XYXY boxes in model input pixels.
        image_size: side of the (square) model input; ``None`` skips the range checks.
        require_prompt: the model is conditioned on the prompt (HyP-Adpt): every prompt needs a click or a box.

    Raises:
        ValueError: wrong shapes, NaN or infinite values, coordinates outside ``[0, image_size]``, boxes whose
            corners are not XYXY, unknown labels, points and boxes of different batch sizes, or an empty prompt
            when ``require_prompt``.
    """
    valid_points = None
    if input_points is not None:
        if not isinstance(input_points, torch.Tensor) or input_points.dim() != 4 or input_points.shape[-1] != 2:
            raise ValueError(
                "input_points must be a tensor of shape (batch, point_batch, points, 2) holding (x, y) pixels, got "
                f"{tuple(input_points.shape) if isinstance(input_points, torch.Tensor) else type(input_points)}"
            )
        _finite("input_points", input_points)
        valid_points = torch.ones(input_points.shape[:-1], dtype=torch.bool, device=input_points.device)
        if input_labels is not None:
            if not isinstance(input_labels, torch.Tensor) or input_labels.shape != input_points.shape[:-1]:
                got = tuple(input_labels.shape) if isinstance(input_labels, torch.Tensor) else type(input_labels)
                raise ValueError(
                    f"input_labels must have shape {tuple(input_points.shape[:-1])} (one label per point of "
                    f"input_points {tuple(input_points.shape)}), got {got}"
                )
            _finite("input_labels", input_labels)
            known = torch.zeros_like(input_labels, dtype=torch.bool)
            for label in VALID_LABELS:
                known |= input_labels == label
            if not known.all():
                raise ValueError(
                    f"input_labels has unknown label(s) {sorted(set(input_labels[~known].tolist()))}; expected "
                    f"{list(VALID_LABELS)} (1 foreground, 0 background, -1 not a point, -10 padding)"
                )
            valid_points = input_labels != PADDING_LABEL
        _inside("input_points", torch.where(valid_points[..., None], input_points, 0), image_size, "a point")
    elif input_labels is not None:
        raise ValueError("input_labels was given without input_points; pass the points the labels belong to")
    if input_boxes is not None:
        if not isinstance(input_boxes, torch.Tensor) or input_boxes.dim() != 3 or input_boxes.shape[-1] != 4:
            raise ValueError(
                "input_boxes must be a tensor of shape (batch, boxes, 4) holding XYXY pixels, got "
                f"{tuple(input_boxes.shape) if isinstance(input_boxes, torch.Tensor) else type(input_boxes)}"
            )
        _finite("input_boxes", input_boxes)
        _inside("input_boxes", input_boxes.unflatten(-1, (2, 2)), image_size, "a corner")
        swapped = (input_boxes[..., 2] < input_boxes[..., 0]) | (input_boxes[..., 3] < input_boxes[..., 1])
        if swapped.any():
            index = tuple(swapped.nonzero()[0].tolist())
            raise ValueError(
                f"input_boxes has box {input_boxes[index].tolist()} at index {index} whose corners are not XYXY "
                "(x_min, y_min, x_max, y_max)"
            )
        if input_points is not None and input_points.shape[:2] != input_boxes.shape[:2]:
            raise ValueError(
                f"input_points {tuple(input_points.shape)} and input_boxes {tuple(input_boxes.shape)} must have the "
                "same (batch, point_batch) dimensions: one box per prompt"
            )
    if require_prompt:
        _check_not_empty(input_points, valid_points, input_boxes)


def _check_not_empty(input_points, valid_points, input_boxes) -> None:
    if input_points is None and input_boxes is None:
        raise ValueError(EMPTY_PROMPT_ERROR)
    if input_boxes is not None:
        if input_boxes.shape[1] == 0:
            raise ValueError(f"input_boxes {tuple(input_boxes.shape)} holds no box. " + EMPTY_PROMPT_ERROR)
        return
    if input_points.shape[1] == 0 or input_points.shape[2] == 0:
        raise ValueError(f"input_points {tuple(input_points.shape)} holds no point. " + EMPTY_PROMPT_ERROR)
    empty = ~valid_points.any(dim=-1)
    if empty.any():
        index = tuple(empty.nonzero()[0].tolist())
        raise ValueError(
            f"input_labels marks every point of prompt {index} as padding (-10). " + EMPTY_PROMPT_ERROR
        )


def check_call_prompts(args: tuple, kwargs: Mapping[str, Any], image_size: int | None, require_prompt: bool) -> None:
    """``check_prompts`` on the prompts of a ``SamModel.forward(*args, **kwargs)`` call (keyword or positional)."""
    given = dict(zip(SAM_CALL_ORDER, args))
    given.update({k: kwargs[k] for k in SAM_CALL_ORDER if k in kwargs})
    check_prompts(
        given.get("input_points"),
        given.get("input_labels"),
        given.get("input_boxes"),
        image_size=image_size,
        require_prompt=require_prompt,
    )


def check_model_call(model: Any, *args: Any, **kwargs: Any) -> None:
    """Checks the inputs of ``model(*args, **kwargs)`` for a SAM-like model with or without adapters, before the call.

    The prompts as ``check_prompts`` (range: the model's input size; an active HyP-Adpt needs a prompt) and
    ``pixel_values`` (finite values).

    Raises:
        ValueError: as ``check_prompts``, or non-finite ``pixel_values``.
    """
    require = any(getattr(m, "requires_prompt", lambda: False)() for m in model.modules())
    check_call_prompts(args, kwargs, model_input_size(model), require_prompt=require)
    pixel_values = args[0] if args else kwargs.get("pixel_values")
    if isinstance(pixel_values, torch.Tensor) and not torch.isfinite(pixel_values).all():
        bad = int((~torch.isfinite(pixel_values)).sum())
        raise ValueError(f"pixel_values has {bad} non-finite value(s) (NaN or inf); clean the image before the call")


def model_input_size(model: Any) -> int | None:
    """The model input side in pixels (:func:`peft_medsa.model_input.model_input_size`), or None when the model has
    no SAM-like config (prompts are then checked without bounds)."""
    from .model_input import model_input_size as input_size

    try:
        return input_size(model)
    except ValueError:
        return None
