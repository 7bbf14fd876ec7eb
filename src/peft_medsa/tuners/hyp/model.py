"""HyPAdptModel: the PEFT tuner that places HyP-Adpt alone in SAM's mask decoder (Wu et al., section 4)."""

from __future__ import annotations

import re

from torch import nn

from ..medsa.config_checks import check_modules_to_save
from ..medsa.model import MedSAModel
from ..medsa.targets import DECODER_BLOCKS
from .config import HyPAdptConfig


def resolve_hyper_targets(model: nn.Module, config: HyPAdptConfig) -> dict[str, str]:
    """Module names of the HyP-Adpt slots (role ``"hyper"``): ``<decoder block>.layer_norm2`` unless overridden.

    Raises:
        ValueError: no module matches (the model has no SAM mask decoder, or ``target_modules`` matches nothing).
    """
    names = [n for n, _ in model.named_modules()]
    if config.target_modules is None:
        pattern = rf"(.*\.)?{re.escape(DECODER_BLOCKS)}\.\d+\.layer_norm2"
        found = [n for n in names if re.fullmatch(pattern, n)]
        what = f"'{DECODER_BLOCKS}.N.layer_norm2' (a SAM mask decoder)"
    elif isinstance(config.target_modules, str):
        found = [n for n in names if re.fullmatch(config.target_modules, n)]
        what = f"target_modules={config.target_modules!r}"
    else:
        suffixes = tuple("." + t for t in config.target_modules)
        found = [n for n in names if n in config.target_modules or n.endswith(suffixes)]
        what = f"target_modules={config.target_modules!r}"
    if not found:
        raise ValueError(f"HyPAdptConfig found no module of {type(model).__name__} matching {what}")
    bad = [n for n in found if DECODER_BLOCKS not in n]
    if bad:
        raise ValueError(
            f"HyPAdptConfig.target_modules matches {bad}, outside the two-way blocks of '{DECODER_BLOCKS}': HyP-Adpt "
            "reads the prompt from those blocks"
        )
    return dict.fromkeys(found, "hyper")


class HyPAdptModel(MedSAModel):
    """HyP-Adpt only: a prompt-conditioned adapter after the token-to-image cross-attention of every two-way block.

    Example:

        ```py
        >>> import peft_medsa
        >>> from peft import get_peft_model

        >>> model = get_peft_model(sam, peft_medsa.HyPAdptConfig(r=64))
        >>> embeddings = model.get_image_embeddings(pixel_values)  # once per image
        >>> outputs = model(image_embeddings=embeddings, input_points=clicks, input_labels=labels)
        ```
    """

    prefix: str = "hypadpt_"

    def _prepare_model(self, peft_config: HyPAdptConfig, model: nn.Module) -> None:
        self._resolved_targets[id(peft_config)] = resolve_hyper_targets(model, peft_config)
        check_modules_to_save(model, peft_config)


__all__ = ["HyPAdptModel", "resolve_hyper_targets"]
