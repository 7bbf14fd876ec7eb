"""LiteMedSAM as a transformers `SamModel`: `LiteMedSamConfig` and `LiteMedSamModel`, registered with the Auto classes.

`LiteMedSamModel` is a `SamModel` whose `vision_encoder` is a [`TinyViTVisionEncoder`]; everything downstream
(prompt encoder, mask decoder, `get_image_embeddings`, the forward's inputs and outputs) is transformers' SAM, so code
written for ViT SAM runs unchanged. Inputs are in the model's 256x256 input space: `pixel_values` of shape
`(batch_size, 3, 256, 256)` (LiteMedSAM preprocessing: RGB, long side resized to 256, min-max scaled to [0, 1], padded
bottom/right), boxes XYXY and points (x, y) in pixels of that space. `pred_masks` are `(batch_size, num_prompts,
num_masks, 256, 256)` logits in that same space.

Importing this module registers `LiteMedSamConfig` / `LiteMedSamModel` with `AutoConfig`, `AutoModel` and
`AutoModelForMaskGeneration` (and `TinyViTConfig` / `TinyViTVisionEncoder` with `AutoConfig` / `AutoModel`), so a
saved model loads with `AutoModel.from_pretrained` offline. Pretrained weights: `lite_medsam.convert_lite_medsam`.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, AutoModel, AutoModelForMaskGeneration, SamConfig, SamModel
from transformers.models.sam.configuration_sam import SamMaskDecoderConfig, SamPromptEncoderConfig
from transformers.models.sam.modeling_sam import (
    SamMaskDecoder,
    SamPositionalEmbedding,
    SamPreTrainedModel,
    SamPromptEncoder,
)

from .tiny_vit import TinyViTConfig, TinyViTVisionEncoder

__all__ = ["LiteMedSamConfig", "LiteMedSamModel", "register_auto_classes"]

_PROMPT_ENCODER_DEFAULTS = {"image_size": 256, "patch_size": 4}
_MASK_DECODER_DEFAULTS = {"layer_norm_eps": 1e-5}  # SAM's original decoder LayerNorms; HF's 1e-6 shifts logits


@strict
class LiteMedSamConfig(SamConfig):
    r"""Configuration of a [`LiteMedSamModel`]: a TinyViT `vision_config` plus SAM prompt encoder and mask decoder.

    Args:
        vision_config (`dict` or `TinyViTConfig`, *optional*): The image encoder; defaults to LiteMedSAM's TinyViT.
        prompt_encoder_config (`dict` or `SamPromptEncoderConfig`, *optional*): Defaults to SAM's with
            `image_size=256, patch_size=4` (a 64x64 embedding grid); a dict is merged over these defaults.
        mask_decoder_config (`dict` or `SamMaskDecoderConfig`, *optional*): Defaults to SAM's with
            `layer_norm_eps=1e-5` (the original decoder's LayerNorm epsilon); a dict is merged over these defaults.
        initializer_range (`float`, defaults to 0.02): Std of the random initialisation.
    """

    model_type = "lite_medsam"
    sub_configs_defaults = {
        "prompt_encoder_config": SamPromptEncoderConfig,
        "mask_decoder_config": SamMaskDecoderConfig,
        "vision_config": TinyViTConfig,
    }

    def __post_init__(self, **kwargs):
        if self.prompt_encoder_config is None or isinstance(self.prompt_encoder_config, dict):
            self.prompt_encoder_config = {**_PROMPT_ENCODER_DEFAULTS, **(self.prompt_encoder_config or {})}
        if self.mask_decoder_config is None or isinstance(self.mask_decoder_config, dict):
            self.mask_decoder_config = {**_MASK_DECODER_DEFAULTS, **(self.mask_decoder_config or {})}
        super().__post_init__(**kwargs)
        vision, prompt, decoder = self.vision_config, self.prompt_encoder_config, self.mask_decoder_config
        if not isinstance(vision, TinyViTConfig):
            raise ValueError(f"LiteMedSamConfig needs a TinyViTConfig `vision_config`, got {type(vision).__name__}.")
        if prompt.image_size != vision.image_size or prompt.image_embedding_size != vision.embedding_size:
            raise ValueError(
                f"prompt_encoder_config (image_size={prompt.image_size}, embedding grid "
                f"{prompt.image_embedding_size}) does not match vision_config (image_size={vision.image_size}, "
                f"embedding grid {vision.embedding_size}); set prompt_encoder_config.patch_size="
                f"{vision.image_size // vision.embedding_size}."
            )
        if not vision.output_channels == prompt.hidden_size == decoder.hidden_size:
            raise ValueError(
                f"vision_config.output_channels ({vision.output_channels}), prompt_encoder_config.hidden_size "
                f"({prompt.hidden_size}) and mask_decoder_config.hidden_size ({decoder.hidden_size}) must be equal."
            )


class LiteMedSamModel(SamModel):
    """`SamModel` with a TinyViT image encoder (LiteMedSAM). Same forward, inputs and outputs as `SamModel`."""

    config_class = LiteMedSamConfig
    _no_split_modules = ["TinyViTBlock", "TinyViTMBConv"]

    def __init__(self, config: LiteMedSamConfig) -> None:
        # SamModel.__init__ would build a ViT encoder; build the same parts with TinyViT instead.
        SamPreTrainedModel.__init__(self, config)
        self.shared_image_embedding = SamPositionalEmbedding(config.vision_config)
        self.vision_encoder = TinyViTVisionEncoder(config.vision_config)
        self.prompt_encoder = SamPromptEncoder(config)
        config.mask_decoder_config._attn_implementation = config._attn_implementation
        self.mask_decoder = SamMaskDecoder(config.mask_decoder_config)
        self.post_init()


def register_auto_classes() -> None:
    """Register the LiteMedSAM and TinyViT classes with transformers' Auto classes (idempotent)."""
    AutoConfig.register(TinyViTConfig.model_type, TinyViTConfig, exist_ok=True)
    AutoConfig.register(LiteMedSamConfig.model_type, LiteMedSamConfig, exist_ok=True)
    AutoModel.register(TinyViTConfig, TinyViTVisionEncoder, exist_ok=True)
    AutoModel.register(LiteMedSamConfig, LiteMedSamModel, exist_ok=True)
    AutoModelForMaskGeneration.register(LiteMedSamConfig, LiteMedSamModel, exist_ok=True)


register_auto_classes()
