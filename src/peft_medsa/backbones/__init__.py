"""Image encoders that plug into transformers' `SamModel` in place of its ViT, and their pretrained checkpoints.

Importing this package registers `LiteMedSamConfig` / `LiteMedSamModel` (and the TinyViT encoder) with transformers'
Auto classes, so `AutoModel.from_pretrained` loads a saved LiteMedSAM folder. The checkpoint converter
(`lite_medsam`, also a CLI: `python -m peft_medsa.backbones.lite_medsam --out DIR`) is imported on first use.
"""

from __future__ import annotations

from typing import Any

from .modeling_lite_medsam import LiteMedSamConfig, LiteMedSamModel
from .tiny_vit import TinyViTAttention, TinyViTBlock, TinyViTConfig, TinyViTMlp, TinyViTVisionEncoder

_CONVERTER = (
    "convert_lite_medsam",
    "convert_lite_medsam_state_dict",
    "find_lite_medsam_checkpoint",
    "load_lite_medsam_state_dict",
)

__all__ = [
    "LiteMedSamConfig",
    "LiteMedSamModel",
    "TinyViTAttention",
    "TinyViTBlock",
    "TinyViTConfig",
    "TinyViTMlp",
    "TinyViTVisionEncoder",
    *_CONVERTER,
]


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m peft_medsa.backbones.lite_medsam` does not find its module already imported.
    if name in _CONVERTER:
        from . import lite_medsam

        return getattr(lite_medsam, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
