"""What a SAM-like model expects as input: its square input side and the pixel normalisation. Defined once here.

Every caller (the predictors, the evaluation protocol, the training loop, the CLI) reads the input size and resolves
the normalisation through these functions, and every public function that takes a normalisation calls its argument
``normalization`` with one of `NORMALIZATIONS`.
"""

from __future__ import annotations

from typing import Any

NORMALIZATIONS = ("auto", "imagenet", "minmax", "none")
"""``"imagenet"``: [0, 1] pixels then ``(x - mean) / std`` (ViT SAM); ``"minmax"``: min-max to [0, 1] (MedSAM,
LiteMedSAM); ``"none"``: values unchanged; ``"auto"``: chosen from the model (`default_normalization`)."""


def base_sam_model(model: Any) -> Any:
    """The underlying SAM-like model of ``model`` (unwraps a ``PeftModel``; the adapters stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def model_input_size(model: Any) -> int:
    """Side ``S`` of the square model input, in pixels.

    The prompt encoder's ``image_size`` (the space of prompts and masks: 256 for LiteMedSAM) wins over the vision
    config's (1024 for ViT SAM, where both agree).

    Raises:
        ValueError: the model has neither size, or a non-square one.
    """
    base = base_sam_model(model)
    config = getattr(base, "config", None)
    size = None
    for part in ("prompt_encoder_config", "vision_config"):
        size = size or getattr(getattr(config, part, None), "image_size", None)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"{type(base).__name__}: non-square image_size={size}; expected a square model input")
        size = size[0]
    if not size:
        raise ValueError(f"cannot find the input size of {type(base).__name__}: expected a SAM-like config")
    return int(size)


def default_normalization(model: Any) -> str:
    """``"minmax"`` ([0, 1], MedSAM) for ``model_type == "lite_medsam"``, else ``"imagenet"`` (ViT SAM)."""
    config = getattr(base_sam_model(model), "config", None)
    return "minmax" if getattr(config, "model_type", "") == "lite_medsam" else "imagenet"


def resolve_normalization(model: Any, normalization: str) -> str:
    """``normalization`` checked against `NORMALIZATIONS`, with ``"auto"`` replaced by the model's default.

    Raises:
        ValueError: an unknown name (the message lists the allowed ones).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}; expected one of {NORMALIZATIONS}")
    return default_normalization(model) if normalization == "auto" else normalization


__all__ = ["NORMALIZATIONS", "base_sam_model", "default_normalization", "model_input_size", "resolve_normalization"]
