"""The Med-SA tuner: bottleneck adapters in SAM's image encoder and mask decoder, registered as PEFT type MEDSA."""

from __future__ import annotations

from ..._registry import _add_peft_type, register

_add_peft_type("MEDSA")  # MedSAConfig.__post_init__ refers to PeftType.MEDSA

from .config import MedSAConfig  # noqa: E402
from .layer import MedSALayer  # noqa: E402
from .model import MedSAModel  # noqa: E402

register("medsa", MedSAConfig, MedSAModel)

__all__ = ["MedSAConfig", "MedSALayer", "MedSAModel"]
