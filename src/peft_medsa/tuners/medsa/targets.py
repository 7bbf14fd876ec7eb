"""Where Med-SA puts its adapters in a SAM-like model: module name -> adapter role.

Default placement (``MedSAConfig.target_modules is None``):

- image encoder: every module named ``attn`` under ``vision_encoder`` is an encoder *block's* attention (ViT SAM:
  ``vision_encoder.layers.N.attn``; TinyViT: ``vision_encoder.layers.S.blocks.M.attn``), numbered in module order
  0, 1, 2, ...; that block's sibling ``mlp`` is its MLP. ``encoder_layers`` selects blocks by that number and
  ``encoder_positions`` selects ``"attn"`` and/or ``"mlp"``.
- mask decoder (``decoder_adapters``): ``mask_decoder.transformer.layers.N.layer_norm2`` (role ``"hyper"``: the
  HyP-Adpt slot after the token-to-image cross-attention, see ``tuners/hyp/layer.py``),
  ``mask_decoder.transformer.layers.N.mlp`` (role ``"mlp"``) and
  ``mask_decoder.transformer.layers.N.layer_norm4`` (role ``"norm"``: after the image-to-token cross-attention).

With ``target_modules`` set, every module it matches is adapted and its role follows from its type (``infer_role``).
"""

from __future__ import annotations

import re

from torch import nn

from .config import MedSAConfig

DECODER_BLOCKS = "mask_decoder.transformer.layers"
EXPECTED_MODULES = (
    "'vision_encoder' with per-block 'attn' and 'mlp' modules (e.g. vision_encoder.layers.N.attn / .mlp), and "
    "'mask_decoder.transformer.layers.N.layer_norm2' / '.mlp' / '.layer_norm4'"
)


def encoder_blocks(model: nn.Module) -> list[str]:
    """Names of the image encoder's blocks (parents of modules named ``attn``), in order."""
    blocks = []
    for name, _ in model.named_modules():
        parts = name.split(".")
        if parts[-1] == "attn" and "vision_encoder" in parts:
            blocks.append(".".join(parts[:-1]))
    return blocks


def infer_role(module: nn.Module) -> str:
    """Adapter role of a module matched by a user's ``target_modules``: ``"norm"``, ``"attn"`` or ``"mlp"``."""
    if isinstance(module, nn.LayerNorm):
        return "norm"
    children = dict(module.named_children())
    if "qkv" in children or "q_proj" in children or "Attention" in type(module).__name__:
        return "attn"
    return "mlp"


def _matches(target_modules: str | list[str], name: str) -> bool:
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return name in target_modules or any(name.endswith("." + t) for t in target_modules)


def _adaptable(module: nn.Module, name: str, target_modules: str | list[str]) -> bool:
    """Channels-first norms (SAM's neck: (B, C, H, W)) cannot take a token adapter: a suffix match skips them
    (``["layer_norm1"]`` means the blocks' norms), naming one exactly is refused."""
    if getattr(module, "data_format", "channels_last") != "channels_first":
        return True
    if isinstance(target_modules, str) or name in target_modules:
        raise ValueError(
            f"target_modules={target_modules!r} matches {name}, a channels-first LayerNorm on (B, C, H, W) "
            "feature maps that an adapter cannot wrap; target the encoder or decoder blocks' norms instead"
        )
    return False


def resolve_targets(model: nn.Module, config: MedSAConfig) -> dict[str, str]:
    """Module names to adapt, each with its role, for ``config`` on ``model``.

    Raises:
        ValueError: the model is not SAM-like (names what was expected), ``encoder_layers`` has indices outside the
            model, or ``target_modules`` matches nothing.
    """
    modules = dict(model.named_modules())
    if config.target_modules is not None:
        targets = {
            name: infer_role(module)
            for name, module in modules.items()
            if name and _matches(config.target_modules, name) and _adaptable(module, name, config.target_modules)
        }
        if not targets:
            raise ValueError(
                f"MedSAConfig.target_modules={config.target_modules!r} matches no module of "
                f"{type(model).__name__}"
            )
        return targets

    blocks = encoder_blocks(model)
    decoder = [n for n in modules if re.fullmatch(rf"(.*\.)?{re.escape(DECODER_BLOCKS)}\.\d+", n)]
    if not blocks or not decoder:
        raise ValueError(
            f"MedSAConfig applies to SAM-like models; {type(model).__name__} lacks the expected modules: "
            f"{EXPECTED_MODULES}. For another architecture, pass target_modules=..."
        )
    if config.encoder_layers is not None:
        outside = [i for i in config.encoder_layers if i >= len(blocks)]
        if outside:
            raise ValueError(
                f"MedSAConfig.encoder_layers={config.encoder_layers} has indices {outside} outside the model: its "
                f"image encoder has {len(blocks)} blocks (indices 0-{len(blocks) - 1})"
            )
    selected = range(len(blocks)) if config.encoder_layers is None else config.encoder_layers
    targets: dict[str, str] = {}
    for index in selected:
        for position in config.encoder_positions:
            name = f"{blocks[index]}.{position}"
            if name not in modules:
                raise ValueError(f"encoder block {blocks[index]} has no '{position}' module; expected {name}")
            targets[name] = position
    if config.decoder_adapters:
        for block in decoder:
            for child, role in (("layer_norm2", "hyper"), ("mlp", "mlp"), ("layer_norm4", "norm")):
                if f"{block}.{child}" not in modules:
                    raise ValueError(f"decoder block {block} has no '{child}' module; expected {EXPECTED_MODULES}")
                targets[f"{block}.{child}"] = role
    return targets
