"""Box prior: the ellipse inscribed in a box prompt, given to SAM as its mask prompt.

A box says where the object is and how large it is; many medical targets (thyroid nodules, optic disc and cup)
nearly fill their box as an ellipse does. With ``box_prior="ellipse"`` an adapter is trained, and then used, with
the ellipse inscribed in every box prompt as SAM's dense mask prompt (``input_masks``, the low-resolution logits SAM
otherwise takes from an earlier prediction), so that the decoder can learn how far to follow it. Off by default:
with training boxes at IoU 0.6 it was below the default recipe on DDTI and ISIC (``benchmarks/README.md``, "The
ellipse inscribed in the box as SAM's mask prompt").

Coordinates: boxes are XYXY ``(x0, y0, x1, y1)`` in MODEL INPUT pixels (after ``resize_longest_and_pad``, side
``S``), inclusive pixel indices as :func:`peft_medsa.prompts.tight_box` gives them. The prior is on SAM's
low-resolution grid of side ``s`` (``4 x`` the image embedding's side); low-resolution pixel ``(i, j)`` covers model
input pixels ``[j S/s, (j + 1) S/s)`` by ``[i S/s, (i + 1) S/s)`` and is judged at its centre.
"""

from __future__ import annotations

from typing import Any

import torch

BOX_PRIORS = ("ellipse",)
"""Priors an adapter's ``box_prior`` may name (``None``: boxes without a mask prompt)."""

PRIOR_LOGIT = 8.0
"""Magnitude of the prior's logits: ``+PRIOR_LOGIT`` inside the ellipse, ``-PRIOR_LOGIT`` outside (SAM's own mask
logits on a confident object are of this order)."""


def check_box_prior(value: Any, name: str = "box_prior") -> None:
    """Raises ``ValueError`` unless ``value`` is ``None`` or one of :data:`BOX_PRIORS`."""
    if value is not None and value not in BOX_PRIORS:
        raise ValueError(f"{name}={value!r}; expected None or one of {BOX_PRIORS}")


def ellipse_prior_logits(boxes: Any, low_res_size: int, input_size: int, logit: float = PRIOR_LOGIT) -> torch.Tensor:
    """Mask-prompt logits of the ellipse inscribed in each box.

    Args:
        boxes: ``(B, 4)`` XYXY boxes in model input pixels (tensor or array; ``(B, 1, 4)`` as ``collate_prompts``
            gives them is accepted).
        low_res_size: ``s``, the side of SAM's low-resolution masks.
        input_size: ``S``, the side of the model input.
        logit: value inside the ellipse (its negative outside).

    Returns:
        ``(B, 1, s, s)`` float32 logits, on the boxes' device when they are a tensor.
    """
    corners = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)  # a tensor keeps its device
    step = input_size / low_res_size
    centres = (torch.arange(low_res_size, dtype=torch.float32, device=corners.device) + 0.5) * step - 0.5  # per cell
    x0, y0, x1, y1 = (corners[:, k, None] for k in range(4))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2  # inclusive corners: a 1-pixel box has radius 1/2
    dx = ((centres[None, :] - cx) / rx) ** 2  # (B, s) along x
    dy = ((centres[None, :] - cy) / ry) ** 2  # (B, s) along y
    inside = dy[:, :, None] + dx[:, None, :] <= 1.0  # (B, s, s), rows = y
    return torch.where(inside, logit, -logit).to(torch.float32)[:, None]


__all__ = ["BOX_PRIORS", "PRIOR_LOGIT", "check_box_prior", "ellipse_prior_logits"]
