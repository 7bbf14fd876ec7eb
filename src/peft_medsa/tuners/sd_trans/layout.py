"""How a batch of slices is grouped into volumes for SD-Trans (Wu et al., section 3.3), and the checks of a 3D call.

A call ``model(pixel_values=slices, num_slices=D, ...)`` feeds ``V`` volumes of ``D`` slices each as one batch of
``B = V * D`` images, volume-major: image ``v * D + d`` is slice ``d`` of volume ``v``. Prompts are per slice, so every
prompt tensor has the same ``B`` rows. This module depends on nothing else in the package (the MEDSA tuner imports it
to validate the call before the forward runs).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

# Per-slice prompt arguments of SamModel.forward: each has one row per image of the batch.
PROMPT_ARGUMENTS = ("input_points", "input_labels", "input_boxes", "input_masks")


class VolumeLayout(NamedTuple):
    """``batch_size`` images forming ``batch_size // num_slices`` volumes of ``num_slices`` slices, volume-major."""

    batch_size: int
    num_slices: int

    @property
    def num_volumes(self) -> int:
        return self.batch_size // self.num_slices


def check_num_slices(num_slices: Any, batch_size: int) -> VolumeLayout:
    """Validates ``num_slices`` against a batch of ``batch_size`` slices.

    Raises:
        ValueError: ``num_slices`` is not a positive integer, or does not divide ``batch_size``.
    """
    if isinstance(num_slices, bool) or not isinstance(num_slices, int) or num_slices < 1:
        raise ValueError(f"num_slices must be a positive integer (slices per volume), got num_slices={num_slices!r}")
    if batch_size % num_slices != 0:
        raise ValueError(
            f"num_slices={num_slices} does not divide the batch of {batch_size} slices (pixel_values.shape[0]); "
            "pass V volumes of num_slices slices each, flattened volume-major into V * num_slices images"
        )
    return VolumeLayout(batch_size, num_slices)


def volume_layout(num_slices: Any, call_kwargs: dict[str, Any]) -> VolumeLayout:
    """The ``VolumeLayout`` of a ``SamModel`` call with ``num_slices``, after checking the call's other arguments.

    Args:
        num_slices: slices per volume, D.
        call_kwargs: the keyword arguments of the call (``pixel_values`` (V * D, C, H, W) and the prompts).

    Only shapes are checked (this runs inside every forward; values are checked at the API boundaries, see
    ``peft_medsa.prompt_checks.check_model_call``).

    Raises:
        ValueError: no ``pixel_values`` (``num_slices`` acts in the image encoder), ``pixel_values`` not 4-D,
            ``num_slices`` not dividing the batch, or a prompt tensor whose first dimension is not one row per slice.
            Each message names the argument.
    """
    pixel_values = call_kwargs.get("pixel_values")
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(
            "num_slices acts in the image encoder and needs pixel_values (V * num_slices slices, volume-major); "
            "got no pixel_values (precomputed image_embeddings already fix how slices were grouped)"
        )
    if pixel_values.dim() != 4:
        hint = ""
        if pixel_values.dim() == 5:
            hint = " (a 5-D (V, D, C, H, W) volume batch: pass pixel_values.flatten(0, 1))"
        raise ValueError(
            f"pixel_values must be (V * num_slices, C, H, W) slices, volume-major; got shape "
            f"{tuple(pixel_values.shape)}{hint}"
        )
    layout = check_num_slices(num_slices, pixel_values.shape[0])
    for name in PROMPT_ARGUMENTS:
        prompt = call_kwargs.get(name)
        if isinstance(prompt, torch.Tensor) and prompt.shape[0] != layout.batch_size:
            raise ValueError(
                f"{name} has {prompt.shape[0]} rows but pixel_values has {layout.batch_size} slices "
                f"({layout.num_volumes} volume(s) x num_slices={num_slices}): give one prompt row per slice"
            )
    return layout


__all__ = ["PROMPT_ARGUMENTS", "VolumeLayout", "check_num_slices", "volume_layout"]
