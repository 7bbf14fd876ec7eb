"""SDTransModel: the tuner of PEFT type ``SDTRANS`` (Med-SA adapters plus the SD-Trans depth branch)."""

from __future__ import annotations

from ..medsa.model import MedSAModel


class SDTransModel(MedSAModel):
    """Med-SA on 3D volumes: ``MedSAModel`` whose encoder attention modules are ``SpaceDepthAttention``.

    Example:

        ```py
        >>> import peft_medsa
        >>> from peft import get_peft_model

        >>> model = get_peft_model(sam, peft_medsa.SDTransConfig(r=64))
        >>> # two volumes of 8 slices, volume-major: (16, 3, 1024, 1024), one box per slice (16, 1, 4) XYXY
        >>> outputs = model(pixel_values=slices, input_boxes=boxes, num_slices=8, multimask_output=False)
        ```
    """

    prefix: str = "sdtrans_"


__all__ = ["SDTransModel"]
