"""HyP-Adpt (Wu et al., section 4): prompt-conditioned adapters in SAM's mask decoder, registered as PEFT type HYPADPT.

Inside the full method the same layer fills the first decoder slot of ``MedSAConfig`` (``prompt_conditioning``).
"""

from __future__ import annotations

from ..._registry import _add_peft_type, register

_add_peft_type("HYPADPT")  # HyPAdptConfig.__post_init__ refers to PeftType.HYPADPT

from .config import HyPAdptConfig  # noqa: E402
from .hyper_prompt_adapter import (  # noqa: E402
    HyperPromptAdapter,
    PromptAdditionAdapter,
    PromptConcatAdapter,
    PromptEmbedding,
)
from .layer import HyperPromptLayer, hyper_prompt_layers  # noqa: E402
from .model import HyPAdptModel  # noqa: E402

register("hypadpt", HyPAdptConfig, HyPAdptModel)

__all__ = [
    "HyPAdptConfig",
    "HyPAdptModel",
    "HyperPromptAdapter",
    "HyperPromptLayer",
    "PromptAdditionAdapter",
    "PromptConcatAdapter",
    "PromptEmbedding",
    "hyper_prompt_layers",
]
