"""SD-Trans (depth attention across slices, sharing the encoder's attention weights) on tiny random SAM models.

The tiny encoder has a windowed block (window 3 on an 8x8 token grid: padded to 9x9) and a global block, so the depth
branch is checked against a plain loop-over-positions reference in both kinds of block, with padding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model
from peft.utils import PeftType
from safetensors.torch import load_file

from peft_medsa import MedSAConfig, SDTransConfig
from peft_medsa.inference.volume import VolumePredictor, chunk_starts, segment_volume
from peft_medsa.prompt_checks import check_model_call
from peft_medsa.prompts import Prompt
from peft_medsa.tuners.sd_trans import SpaceDepthAttention, VolumeLayout

from conftest import tiny_lite_medsam_config, tiny_sam

FUSIONS = ("add", "concat", "cross_attention")


def sd_model(seed=0, random_adapters=True, **config):
    config = dict(r=4, sd_trans=True, decoder_adapters=False) | config
    model = get_peft_model(tiny_sam(seed), MedSAConfig(**config))
    if random_adapters:
        torch.manual_seed(7)
        for layer in sd_layers(model):
            for name in layer.adapters:
                layer.adapters[name].reset_parameters(zero_init=False)
                layer.depth_adapters[name].reset_parameters(zero_init=False)
    return model.eval()


def sd_layers(model):
    return [m for m in model.modules() if isinstance(m, SpaceDepthAttention)]


def volume_inputs(volumes=2, slices=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    n = volumes * slices
    return {
        "pixel_values": torch.randn(n, 3, 64, 64, generator=g),
        "input_boxes": torch.tensor([[[4.0, 6.0, 40.0, 44.0]]]).repeat(n, 1, 1),
        "multimask_output": False,
    }


def masks(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs).pred_masks


# -- reference: SAM's block, plus the depth branch written as loops over positions ------------------------------------
def naive_depth(attn, tokens):
    """tokens: (D, C) normed tokens of one spatial position in the D slices -> proj(attention over D), (D, C)."""
    heads = attn.num_attention_heads
    q, k, v = attn.qkv(tokens).reshape(len(tokens), 3, heads, -1).unbind(1)  # (D, heads, hd)
    out = []
    for h in range(heads):
        scores = q[:, h] @ k[:, h].T / math.sqrt(q.shape[-1])
        out.append(torch.softmax(scores, dim=-1) @ v[:, h])
    return attn.proj(torch.cat(out, dim=-1))


def reference_block(block, x, volumes, slices):
    """SamVisionLayer forward with SD-Trans (add fusion), from the unwrapped SAM modules and the adapters."""
    layer = block.attn
    attn, space_adapter, depth_adapter = (
        layer.base_layer,
        layer.adapters["default"],
        layer.depth_adapters["default"],
    )
    normed = block.layer_norm1(x)
    height, width = x.shape[1:3]
    windows, pad = block.window_partition(normed, block.window_size) if block.window_size else (normed, None)
    space = attn(hidden_states=windows)[0]
    if block.window_size:
        space = block.window_unpartition(space, block.window_size, pad, (height, width))
    space = space + space_adapter(space)
    depth = torch.zeros_like(space)
    for v in range(volumes):
        rows = slice(v * slices, (v + 1) * slices)
        for i in range(height):
            for j in range(width):
                depth[rows, i, j] = depth_adapter(naive_depth(attn, normed[rows, i, j]))
    hidden = x + space + depth
    mlp = getattr(block.mlp, "base_layer", block.mlp)
    return hidden + mlp(block.layer_norm2(hidden))


@pytest.mark.parametrize("slices", [1, 3])
@pytest.mark.parametrize("block_index", [0, 1], ids=["windowed_padded", "global"])
def test_block_matches_loop_reference(block_index, slices):
    model = sd_model(encoder_positions=["attn"])
    block = model.base_model.model.vision_encoder.layers[block_index]
    assert (block.window_size, 8 % max(block.window_size, 1)) == ((3, 2) if block_index == 0 else (0, 0))
    x = torch.randn(2 * slices, 8, 8, 32)
    layout = VolumeLayout(2 * slices, slices)
    with torch.no_grad():
        handle = block.attn.register_forward_pre_hook(
            lambda m, a, k: (a, k | {"num_slices": layout}), with_kwargs=True
        )
        out = block(x)
        handle.remove()
        expected = reference_block(block, x, volumes=2, slices=slices)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_padding_cannot_leak_into_real_positions():
    """Depth outputs at real positions do not depend on what the padded positions of the windows hold."""
    model = sd_model()
    block = model.base_model.model.vision_encoder.layers[0]
    layer = block.attn
    grid = torch.randn(4, 8, 8, 32)
    outs = []
    for fill in (0.0, 100.0):
        padded = torch.full((4, 9, 9, 32), fill)
        padded[:, :8, :8] = grid
        windows = padded.reshape(4, 3, 3, 3, 3, 32).permute(0, 1, 3, 2, 4, 5).reshape(-1, 3, 3, 32)
        with torch.no_grad():
            depth = layer.depth_branch(layer.base_layer.qkv(windows), num_volumes=2, num_slices=2)
        # (V, D, P, C) back to the padded grid, then crop
        grid_out = depth.reshape(4, 3, 3, 3, 3, 32).permute(0, 1, 3, 2, 4, 5).reshape(4, 9, 9, 32)
        outs.append(grid_out[:, :8, :8])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_identity_at_init(fusion):
    inputs = volume_inputs()
    base = masks(tiny_sam(), inputs)
    model = sd_model(random_adapters=False, sd_fusion=fusion)
    torch.testing.assert_close(masks(model, inputs, num_slices=3), base, rtol=0, atol=0)
    torch.testing.assert_close(masks(model, inputs), base, rtol=0, atol=0)


def test_identity_at_init_with_decoder_adapters():
    inputs = volume_inputs()
    model = sd_model(random_adapters=False, decoder_adapters=True)
    torch.testing.assert_close(masks(model, inputs, num_slices=3), masks(tiny_sam(), inputs), rtol=0, atol=0)


def test_depth_branch_changes_output_and_mixes_slices():
    """With trained depth adapters, a slice's output depends on the other slices of its volume only."""
    model = sd_model()
    inputs = volume_inputs(volumes=2, slices=3)
    out = masks(model, inputs, num_slices=3)
    changed = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in inputs.items()}
    changed["pixel_values"][2] = torch.randn(3, 64, 64)  # last slice of volume 0
    out2 = masks(model, changed, num_slices=3)
    assert (out2[:2] - out[:2]).abs().max() > 1e-6  # its volume-mates see it
    torch.testing.assert_close(out2[3:], out[3:], rtol=0, atol=1e-6)  # the other volume does not


@pytest.mark.parametrize("fusion", FUSIONS)
def test_gradients_reach_depth_adapter(fusion):
    model = sd_model(random_adapters=False, sd_fusion=fusion)
    model.train()
    inputs = volume_inputs(volumes=1, slices=3)
    out = model(**inputs, num_slices=3).pred_masks
    out.square().mean().backward()
    for layer in sd_layers(model):
        assert layer.depth_adapters["default"].up.weight.grad.abs().max() > 0
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".medsa_depth_adapter.default." in n for n in trainable)
    assert all(".medsa_" in n for n in trainable)


def test_single_slice_volume_equals_2d_path():
    model = sd_model(sd_fusion="cross_attention")
    inputs = volume_inputs(volumes=3, slices=1)
    torch.testing.assert_close(masks(model, inputs, num_slices=1), masks(model, inputs), rtol=0, atol=0)
    assert (masks(model, inputs) - masks(tiny_sam(), inputs)).abs().max() > 1e-6  # the depth branch is active


def test_fusion_parameter_counts():
    c, r, blocks = 32, 4, 2
    counts = {}
    for fusion in FUSIONS:
        model = sd_model(random_adapters=False, sd_fusion=fusion, encoder_positions=["attn"])
        counts[fusion] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter = 2 * c * r + r + c
    assert counts["add"] == blocks * 2 * adapter  # space + depth adapters
    assert counts["concat"] - counts["add"] == blocks * (2 * c * c + c)
    assert counts["cross_attention"] - counts["add"] == blocks * (4 * c * c + 4 * c)


def test_save_load_round_trip(tmp_path):
    model = sd_model(sd_fusion="concat")
    with torch.no_grad():
        for layer in sd_layers(model):
            layer.depth_fusions["default"].linear.weight.add_(0.01 * torch.randn(32, 64))
    inputs = volume_inputs()
    expected = masks(model, inputs, num_slices=3)
    model.save_pretrained(tmp_path / "a")
    keys = set(load_file(tmp_path / "a" / "adapter_model.safetensors"))
    assert any(".medsa_depth_adapter.down.weight" in k for k in keys)
    assert any(".medsa_depth_fusion.linear.weight" in k for k in keys)
    assert not any(".default." in k for k in keys)
    torch.manual_seed(123)
    loaded = PeftModel.from_pretrained(tiny_sam(), tmp_path / "a", adapter_name="other").eval()
    torch.testing.assert_close(masks(loaded, inputs, num_slices=3), expected, rtol=0, atol=0)


def test_sdtrans_peft_type_round_trip(tmp_path):
    model = get_peft_model(tiny_sam(), SDTransConfig(r=4, decoder_adapters=False))
    assert model.peft_config["default"].peft_type == PeftType.SDTRANS and len(sd_layers(model)) == 2
    model.save_pretrained(tmp_path / "s")
    keys = set(load_file(tmp_path / "s" / "adapter_model.safetensors"))
    assert any(".sdtrans_depth_adapter.down.weight" in k for k in keys)
    assert all(".sdtrans_" in k and ".medsa_" not in k for k in keys)  # the registered prefix is the real one
    loaded = PeftModel.from_pretrained(tiny_sam(), tmp_path / "s")
    assert isinstance(loaded.peft_config["default"], SDTransConfig) and len(sd_layers(loaded)) == 2


def test_tiny_vit_backbone():
    """SD-Trans on LiteMedSAM's TinyViT: identity at init, and head-major qkv split checked against a loop."""
    lite = pytest.importorskip("peft_medsa.backbones")
    config = tiny_lite_medsam_config()
    torch.manual_seed(0)
    base = lite.LiteMedSamModel(config).eval()
    inputs = {"pixel_values": torch.randn(4, 3, 32, 32), "input_boxes": torch.tensor([[[2.0, 3, 20, 25]]] * 4)}
    with torch.no_grad():
        expected = base(**inputs, multimask_output=False).pred_masks
    model = get_peft_model(base, MedSAConfig(r=4, sd_trans=True, decoder_adapters=False)).eval()
    layers = sd_layers(model)
    assert len(layers) == 2
    torch.testing.assert_close(masks(model, inputs, num_slices=2, multimask_output=False), expected, rtol=0, atol=0)
    layer = layers[1]  # 3 heads, window 5 over an 8x8 grid: padded
    tokens = torch.randn(2 * 2, 25, 24)  # V=2, D=2, one window each
    with torch.no_grad():
        qkv = layer.base_layer.qkv(layer.base_layer.norm(tokens))
        depth = layer.depth_branch(qkv, num_volumes=2, num_slices=2)
        per_head = qkv.reshape(4, 25, 3, 3, 8)  # (rows, T, heads, [q|k|v], hd)
        for v in range(2):
            for t in (0, 13, 24):
                q, k, val = (per_head[2 * v : 2 * v + 2, t, :, i] for i in range(3))  # (D, heads, hd)
                heads = [torch.softmax(q[:, h] @ k[:, h].T / math.sqrt(8), -1) @ val[:, h] for h in range(3)]
                torch.testing.assert_close(depth[v, :, t], layer.base_layer.proj(torch.cat(heads, -1)))


# -- bad input --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        (dict(num_slices=4), r"num_slices=4 does not divide the batch of 6 slices"),
        (dict(num_slices=0), r"num_slices must be a positive integer"),
        (dict(num_slices=True), r"num_slices must be a positive integer"),
        (dict(num_slices=3, input_boxes=torch.tensor([[[4.0, 6.0, 40.0, 44.0]]])), r"input_boxes has 1 rows"),
        (dict(num_slices=3, pixel_values=torch.randn(2, 3, 3, 64, 64)), r"flatten\(0, 1\)"),
    ],
)
def test_bad_model_calls(change, match):
    model = sd_model(random_adapters=False)
    inputs = volume_inputs() | change
    with pytest.raises(ValueError, match=match):
        model(**inputs)


def test_non_finite_slices_rejected_at_the_api_boundary():
    model = sd_model(random_adapters=False)
    inputs = volume_inputs() | dict(num_slices=3, pixel_values=torch.full((6, 3, 64, 64), float("nan")))
    with pytest.raises(ValueError, match=r"pixel_values has 73728 non-finite"):
        check_model_call(model, **inputs)


def test_bad_configs_and_mixed_volume_adapters():
    with pytest.raises(ValueError, match="sd_fusion='mean'"):
        MedSAConfig(sd_trans=True, sd_fusion="mean")
    with pytest.raises(ValueError, match="encoder_positions must include 'attn'"):
        MedSAConfig(sd_trans=True, encoder_positions=["mlp"])
    with pytest.raises(ValueError, match="SDTransConfig.sd_trans must be True"):
        SDTransConfig(sd_trans=False)
    model = sd_model()
    with pytest.raises(ValueError, match="slices of one volume different adapters"):
        masks(model, volume_inputs(), num_slices=3, adapter_names=["default", "default", "__base__"] * 2)


# -- whole volumes ----------------------------------------------------------------------------------------------------
def test_chunk_starts_cover_volume():
    assert chunk_starts(10, 4, 1) == [0, 3, 6]
    assert chunk_starts(11, 4, 1) == [0, 3, 6, 7]
    assert chunk_starts(3, 8, 2) == [0]


def test_chunked_volume_equals_unchunked_where_chunks_overlap():
    volume = np.random.default_rng(0).normal(size=(7, 48, 40)).astype(np.float32)
    prompts = {z: Prompt(box=[5.0, 6.0, 30.0, 40.0]) for z in range(1, 7)}  # object absent from slice 0
    # depth adapters at zero: slices do not interact, so chunking must not change anything
    model = sd_model(random_adapters=False)
    full = VolumePredictor(model, chunk_size=7, overlap=0)
    full.set_volume(volume)
    chunked = VolumePredictor(model, chunk_size=4, overlap=2)
    chunked.set_volume(volume)
    full_logits, chunked_logits = full.predict_logits(prompts), chunked.predict_logits(prompts)
    for z in prompts:
        np.testing.assert_allclose(chunked_logits[z], full_logits[z], rtol=1e-4, atol=1e-4)
    labels = segment_volume(model, volume, prompts, chunk_size=4, overlap=2)
    assert labels.shape == volume.shape and (labels[0] == 0).all() and labels[1:].any()
    # trained depth adapters: each slice's embedding is the average over the chunks covering it
    predictor = VolumePredictor(sd_model(), chunk_size=4, overlap=2)
    predictor.set_volume(volume)
    embeddings = predictor.embeddings
    assert embeddings.starts == chunk_starts(7, 4, 2) == [0, 2, 3]
    with torch.no_grad():
        per_chunk = [embeddings.encode(s, s + 4) for s in embeddings.starts]
    torch.testing.assert_close(embeddings(4)[0], (per_chunk[1][2] + per_chunk[2][1]) / 2)
    torch.testing.assert_close(embeddings(3)[0], (per_chunk[0][3] + per_chunk[1][1] + per_chunk[2][0]) / 3)
    torch.testing.assert_close(embeddings(6)[0], per_chunk[2][3])
    assert not torch.allclose(per_chunk[0][3], per_chunk[2][0], atol=1e-5)  # the context changes slice 3


def test_nifti_volume_keeps_shape_and_affine(tmp_path):
    nib = pytest.importorskip("nibabel")
    data = np.random.default_rng(1).normal(size=(40, 48, 5)).astype(np.float32)  # (w, h, d)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 30.0)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "mr.nii.gz"))
    predictor = VolumePredictor(sd_model(), chunk_size=3, overlap=1)
    predictor.set_volume(tmp_path / "mr.nii.gz")
    assert predictor.shape == (5, 48, 40)
    labels = predictor.predict({z: Prompt(box=[4.0, 5.0, 30.0, 40.0]) for z in range(5)}).astype(np.uint8)
    written = nib.load(str(predictor.save(tmp_path / "labels.nii.gz", labels)))
    stored = nib.load(str(tmp_path / "mr.nii.gz")).affine  # NIfTI keeps the affine in float32
    assert written.shape == data.shape and np.array_equal(written.affine, stored)
    np.testing.assert_allclose(written.affine, affine, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), labels.T)


@pytest.mark.parametrize(
    "volume, kwargs, match",
    [
        (np.where(np.eye(32)[None] > 0, np.nan, 0.0).repeat(3, 0), {}, r"non-finite"),
        (np.zeros((32, 32)), {}, r"volume of shape \(32, 32\); expected \(D, H, W\)"),
        (np.zeros((3, 32, 32)), dict(chunk_size=2, overlap=2), r"overlap must be an integer in \[0, chunk_size=2\)"),
        (np.zeros((3, 32, 32)), dict(chunk_size=0), r"chunk_size must be a positive integer"),
    ],
)
def test_bad_volumes(volume, kwargs, match):
    with pytest.raises(ValueError, match=match):
        segment_volume(sd_model(random_adapters=False), volume, {0: Prompt(box=[1, 1, 5, 5])}, **kwargs)
