"""Default training recipes: what ``peft-medsa train``, the demo and the examples use unless told otherwise.

A recipe is a :class:`~peft_medsa.MedSAConfig` (where the adapters go, their width) plus the
:class:`~peft_medsa.training.TrainingConfig` options that were chosen with it (steps, learning rate, prompts).

- LiteMedSAM (``model_type == "lite_medsam"``): chosen by measurement on the validation split of four real 2D
  sets (``benchmarks/learning_curves.py``, results in ``benchmarks/README.md``): see :data:`LITE_MEDSAM`.
- ViT SAM (transformers' ``SamModel``): the paper's configuration (adapters in every encoder block, decoder
  adapters with HyP-Adpt, r = 64, s = 0.05) with a learning rate of 1e-4.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from ..tuners.medsa.config import MedSAConfig
from .config import TrainingConfig


@dataclass(frozen=True)
class Recipe:
    """A Med-SA configuration and the training options that go with it.

    Args:
        peft_config: The adapters.
        training: :class:`TrainingConfig` keyword arguments (``max_steps``, ``learning_rate``, prompts, ...).
        prompts_text: The training prompts in words (for model cards; :attr:`training_text` adds the mirroring).
    """

    peft_config: MedSAConfig
    training: dict[str, Any] = field(default_factory=dict)
    prompts_text: str = ""

    @property
    def training_text(self) -> str:
        """The training prompts and augmentation in words (model cards): ``prompts_text``, plus the mirroring."""
        flip = self.training.get("hflip_probability", 0.0)
        return self.prompts_text + (f"; each image mirrored left-right with probability {flip:g}" if flip else "")

    def training_config(self, **overrides: Any) -> TrainingConfig:
        """The :class:`TrainingConfig` of this recipe, with ``overrides`` (``output_dir``, ``seed``, ...)."""
        return TrainingConfig(**{**self.training, **overrides})


LITE_MEDSAM = Recipe(
    peft_config=MedSAConfig(r=16, encoder_layers=[8, 9]),
    training=dict(
        max_steps=200, batch_size=2, learning_rate=1e-3, lr_scheduler="cosine", warmup_steps=10,
        normalization="minmax", initial_clicks=1, max_corrective_clicks=2, box_probability=0.5, box_iou=0.6,
        hflip_probability=0.5, eval_setting="1pt",
    ),
    prompts_text="half the batches start from one random positive click, half from a box at IoU 0.6 with the tight "
    "box; then 0-2 corrective clicks in the largest error region",
)
"""LiteMedSAM: adapters in the last TinyViT stage (blocks 8 and 9, so the frozen-prefix cache computes the first
three stages once per image) and the mask decoder with HyP-Adpt, r = 16. Point batches start from one click
(``initial_clicks=1``): with 1-3 start clicks and 0-2 corrective ones, a lone click (what a 1-point user gives) was
trained in 1 sample of 18; with one start click in 1 of 6, which raised the validation 1-point Dice on all four
sets (``benchmarks/README.md``, "One start click"). Half the training images are mirrored left-right
(``hflip_probability=0.5``): with 14 training images per set it was at or above the recipe without mirroring in 17 of
20 validation cells over 5 seeds (1-point ISIC 94.0 from 93.8, DDTI 88.4 from 87.6, ORIGA cup 80.5 from 80.2, ORIGA
disc 93.0 from 93.1; ``benchmarks/README.md``, "Mirrored training images"). The adapter's ``mask_shape`` is decided
from the training masks (``TrainingConfig.mask_shape="auto"``, every recipe): ORIGA's disc and cup, drawn as ellipses,
get the ellipse fit in the predictor (``benchmarks/README.md``, "Masks drawn as ellipses")."""

VIT_SAM = Recipe(
    peft_config=MedSAConfig(),
    training=dict(
        max_steps=1000, batch_size=2, learning_rate=1e-4, lr_scheduler="cosine", warmup_steps=50,
        normalization="imagenet", initial_clicks=3, max_corrective_clicks=2, box_probability=0.3, box_iou=0.75,
        eval_setting="1pt",
    ),
    prompts_text="1-3 random positive clicks (or, in 30% of the batches, a box at IoU 0.75), then 0-2 corrective "
    "clicks in the largest error region",
)
"""ViT SAM: the paper's Med-SA configuration."""


LITE_MEDSAM_PRESETS: dict[str, dict[str, Any]] = {
    "optic-disc-cup": dict(learning_rate=2e-3, r=32),
}
"""Named changes of :data:`LITE_MEDSAM` for one kind of target, each measured better than the default on it on the
validation split (``benchmarks/README.md``) but not on every set, so not the default. ``r`` changes the adapters'
width (:class:`MedSAConfig`); every other key is a :class:`TrainingConfig` field:

- ``optic-disc-cup`` (fundus photographs, optic disc and optic cup): a peak learning rate of 2e-3 and adapters of
  width r = 32 (408,896 trainable parameters, 4.2% of LiteMedSAM), the default's mirroring kept. On ORIGA, 3 training
  seeds: 2e-3 at r = 16 was at or above the default in all 10 settings of disc and cup (1-point: disc 94.2 against
  92.9, cup 82.1 against 80.7), and r = 32 raised the cup further in all 5 (1-point 83.4, 3-points 84.9, BBox 0.5
  85.5 against 82.1, 82.3, 83.6) and left the disc level (1-point 94.2 both). Without mirroring, 2e-3 was worse than
  the default on ISIC and DDTI, and ISIC's tight box fell below zero-shot. Its adapters record the ellipse fit
  (``mask_shape``) as the default's do on ORIGA: with it, 1-point cup 84.5 and disc 95.0, tight box 91.0 and 96.0
  (3 seeds; the default with the fit: 83.4, 94.1, 89.7, 95.5).
"""


def default_recipe(
    model: nn.Module,
    steps: int | None = None,
    learning_rate: float | None = None,
    rank: int | None = None,
    preset: str | None = None,
) -> Recipe:
    """The recipe for ``model`` (a ``SamModel`` or LiteMedSAM, bare or PEFT-wrapped), with optional overrides.

    Args:
        preset: A name of :data:`LITE_MEDSAM_PRESETS` (LiteMedSAM only), applied before ``steps``, ``learning_rate``
            and ``rank``, which win over it.

    Raises:
        ValueError: An unknown preset, or a preset for a model that is not LiteMedSAM.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = getattr(getattr(base, "config", None), "model_type", "")
    recipe = LITE_MEDSAM if model_type == "lite_medsam" else VIT_SAM
    training = dict(recipe.training)
    preset_rank = None
    if preset is not None:
        if preset not in LITE_MEDSAM_PRESETS:
            raise ValueError(f"preset {preset!r} is not known; choose one of {sorted(LITE_MEDSAM_PRESETS)}")
        if recipe is not LITE_MEDSAM:
            raise ValueError(f"preset {preset!r} was measured on LiteMedSAM only, but the model is "
                             f"{model_type or type(base).__name__!r}; leave the preset out for ViT SAM")
        changes = dict(LITE_MEDSAM_PRESETS[preset])
        preset_rank = changes.pop("r", None)  # the adapters' width; everything else is a TrainingConfig field
        training.update(changes)
    if steps is not None:
        training["max_steps"] = steps
        training["warmup_steps"] = min(training["warmup_steps"], steps // 4)
    if learning_rate is not None:
        training["learning_rate"] = learning_rate
    peft_config = copy.deepcopy(recipe.peft_config)  # get_peft_model records things on its config
    rank = rank if rank is not None else preset_rank
    if rank is not None:
        peft_config.r = rank
    return replace(recipe, peft_config=peft_config, training=training)


__all__ = ["LITE_MEDSAM", "LITE_MEDSAM_PRESETS", "VIT_SAM", "Recipe", "default_recipe"]
