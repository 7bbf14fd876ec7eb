"""SD-Trans (Wu et al., section 3.3): SAM's 2D encoder on 3D volumes with a depth branch sharing the attention
weights; also registered as its own PEFT type ``SDTRANS``."""

from __future__ import annotations

from ..._registry import _add_peft_type, register

_add_peft_type("SDTRANS")  # SDTransConfig.__post_init__ refers to PeftType.SDTRANS

from .config import SDTransConfig  # noqa: E402
from .layout import VolumeLayout  # noqa: E402
from .model import SDTransModel  # noqa: E402
from .space_depth_attention import SpaceDepthAttention  # noqa: E402

register("sdtrans", SDTransConfig, SDTransModel)

__all__ = ["SDTransConfig", "SDTransModel", "SpaceDepthAttention", "VolumeLayout"]
