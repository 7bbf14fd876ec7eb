"""Shared fixtures: tiny random SAM configs (2 layers, 32 wide, 64 px) so that a train step takes ~10 ms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_flush_denormal(True)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def tiny_sam_config(**vision_overrides):
    """A 2-block ViT SAM at 64x64 px: block 0 windowed (window 3, so the 8x8 token grid needs padding), block 1
    global. All weights random with std 0.02 (no subnormal floats)."""
    from transformers import SamConfig

    vision = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=64,
        patch_size=8,
        mlp_dim=64,
        output_channels=32,
        global_attn_indexes=[1],
        window_size=3,
        num_pos_feats=16,
        initializer_range=0.02,
    )
    vision.update(vision_overrides)
    return SamConfig(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8),
        mask_decoder_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32
        ),
        initializer_range=0.02,
    )


def tiny_lite_medsam_config(**vision_overrides):
    """A 32 px LiteMedSAM: TinyViT stages 8/16/24 wide (windows 7/7/5, padded), 32-wide prompt encoder and decoder."""
    from peft_medsa.backbones import LiteMedSamConfig

    vision = dict(
        image_size=32,
        embed_dims=(8, 16, 24),
        depths=(1, 1, 1),
        num_heads=(1, 2, 3),
        window_sizes=(7, 7, 5),
        downsample_strides=(2, 1),
        output_channels=32,
        num_pos_feats=16,
    )
    vision.update(vision_overrides)
    return LiteMedSamConfig(
        vision_config=vision,
        prompt_encoder_config=dict(image_size=32, patch_size=2, hidden_size=32),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )


def tiny_sam(seed: int = 0, **vision_overrides):
    """A tiny random ``SamModel`` in eval mode; rel-pos and positional weights randomised so they matter."""
    from transformers import SamModel

    torch.manual_seed(seed)
    model = SamModel(tiny_sam_config(**vision_overrides))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "rel_pos" in name or name.endswith("pos_embed"):
                param.normal_(0, 0.02)
    return model.eval()


def tiny_inputs(batch: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random images (B, 3, 64, 64) with one XYXY box per image (model input pixels)."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[[4.0, 6.0, 40.0, 44.0]], [[10.0, 12.0, 60.0, 30.0]], [[0.0, 0.0, 63.0, 63.0]]])
    return {
        "pixel_values": torch.randn(batch, 3, 64, 64, generator=g),
        "input_boxes": boxes[:batch].clone() if batch <= 3 else boxes[:1].repeat(batch, 1, 1),
        "multimask_output": False,
    }


@pytest.fixture
def fresh_accelerate():
    """One torch thread (the machine is shared) and a fresh accelerate state around a test."""
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    torch.set_num_threads(threads)


@pytest.fixture
def sam():
    return tiny_sam()


def shared_data_or_skip() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it ships with the project's CI, not with a clone)")
    return SHARED_DATA
