"""TinyViT encoder on tiny random configs: shapes, module names for adapters, BatchNorm freezing, attention biases."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from peft_medsa.backbones import TinyViTAttention, TinyViTConfig, TinyViTMlp, TinyViTVisionEncoder
from peft_medsa.backbones.tiny_vit import relative_offset_index

# 32 px in, 16x16 embedding: stage 1 runs 7x7 windows with padding (16 -> 21), stage 2 one padded 5x5 grid of windows.
TINY = dict(
    image_size=32,
    embed_dims=(8, 16, 24),
    depths=(1, 2, 1),
    num_heads=(1, 2, 3),
    window_sizes=(7, 7, 5),
    downsample_strides=(2, 1),
    output_channels=32,
    initializer_range=0.2,  # at 0.02 the local convs shrink early blocks' contribution to ~1e-6 of the output
)


def _encoder(seed: int = 0, **overrides) -> TinyViTVisionEncoder:
    torch.manual_seed(seed)
    model = TinyViTVisionEncoder(TinyViTConfig(**{**TINY, **overrides}))
    with torch.no_grad():  # non-trivial BatchNorm statistics and attention biases, as in trained weights
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.normal_(1, 0.1)
            if isinstance(module, TinyViTAttention):
                module.attention_biases.normal_()
    return model.eval()


def _pixels(batch_size: int = 2) -> torch.Tensor:
    return torch.rand(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_output_is_sam_image_embedding():
    model = _encoder()
    output = model(_pixels())
    assert model.config.embedding_size == 16
    assert output.last_hidden_state.shape == (2, 32, 16, 16)
    assert torch.isfinite(output.last_hidden_state).all()


def test_hidden_states_and_attentions_are_recorded():
    model = _encoder(attn_implementation="eager")
    output = model(_pixels(), output_hidden_states=True, output_attentions=True)
    # the input of the first TinyViTBlock, then every TinyViTBlock's output, each (B, H, W, C)
    assert [tuple(h.shape) for h in output.hidden_states] == [(2, 16, 16, 16)] * 3 + [(2, 16, 16, 24)]
    # stage 1: 16x16 padded to 21x21 -> 9 windows of 49 tokens; stage 2: 16 -> 20, 16 windows of 25 tokens
    assert [tuple(a.shape) for a in output.attentions] == [(18, 2, 49, 49)] * 2 + [(32, 3, 25, 25)]


def test_sdpa_matches_eager_attention():
    sdpa = _encoder()
    eager = _encoder(attn_implementation="eager")
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    with torch.no_grad():
        assert torch.allclose(sdpa(_pixels()).last_hidden_state, eager(_pixels()).last_hidden_state, atol=1e-5)


def test_adapter_target_module_names_and_attention_input_shape():
    model = _encoder()
    names = dict(model.named_modules())
    for block in ("layers.1.blocks.0", "layers.1.blocks.1", "layers.2.blocks.0"):
        assert isinstance(names[f"{block}.attn"], TinyViTAttention)
        assert isinstance(names[f"{block}.attn.qkv"], nn.Linear) and isinstance(names[f"{block}.attn.proj"], nn.Linear)
        assert isinstance(names[f"{block}.mlp"], TinyViTMlp)
        assert isinstance(names[f"{block}.mlp.fc1"], nn.Linear) and isinstance(names[f"{block}.mlp.fc2"], nn.Linear)
    seen = {}
    attention = names["layers.1.blocks.0.attn"]
    attention.register_forward_hook(
        lambda module, args, kwargs, output: seen.update(input=kwargs["hidden_states"].shape, output=output),
        with_kwargs=True,
    )
    names["layers.1.blocks.0.mlp.fc1"].register_forward_hook(lambda m, args, out: seen.update(fc1=args[0]))
    model(_pixels())
    assert seen["input"] == (2 * 9, 49, 16)  # (batch * windows, window_size**2, dim), called by keyword
    assert isinstance(seen["output"], tuple) and seen["output"][0].shape == seen["input"] and seen["output"][1] is None
    normed = seen["fc1"]  # the MLP normalises internally: fc1 sees LayerNorm output (zero mean per token)
    weight, bias = names["layers.1.blocks.0.mlp.norm"].weight, names["layers.1.blocks.0.mlp.norm"].bias
    assert torch.allclose(((normed - bias) / weight).mean(-1), torch.zeros(normed.shape[:-1]), atol=1e-5)


def test_batchnorm_stays_in_eval_under_train_and_stats_do_not_move():
    model = _encoder()
    model.train()
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert model.training and model.layers[1].blocks[0].attn.training
    assert batch_norms and not any(m.training for m in batch_norms)
    before = [m.running_mean.clone() for m in batch_norms]
    eval_output = _encoder().eval()(_pixels()).last_hidden_state
    train_output = model(_pixels()).last_hidden_state
    assert all(torch.equal(m.running_mean, b) for m, b in zip(batch_norms, before))
    assert torch.allclose(train_output, eval_output, atol=1e-6)  # no batch statistics used


def test_batchnorm_trains_when_not_frozen():
    model = _encoder(freeze_batchnorm=False).train()
    batch_norm = model.layers[0].blocks[0].conv1.bn
    assert batch_norm.training
    before = batch_norm.running_mean.clone()
    model(_pixels())
    assert not torch.equal(batch_norm.running_mean, before)


def test_gradients_reach_conv_and_attention_with_frozen_batchnorm():
    model = _encoder().train()
    model(_pixels()).last_hidden_state.square().mean().backward()
    for name in (
        "patch_embed.seq.0.c.weight",
        "patch_embed.seq.0.bn.weight",
        "layers.0.blocks.0.conv2.c.weight",
        "layers.1.blocks.0.attn.attention_biases",
        "layers.1.blocks.0.attn.qkv.weight",
        "layers.2.blocks.0.mlp.fc1.weight",
        "neck.conv2.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = _encoder().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(_pixels()).last_hidden_state.square().mean().backward()
        grads.append(model.get_parameter("layers.1.blocks.0.attn.qkv.weight").grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-7)


def test_loading_new_weights_changes_the_output_in_eval_mode():
    model = _encoder(seed=0).eval()
    with torch.no_grad():
        first = model(_pixels()).last_hidden_state
        state = model.state_dict()
        biases = state["layers.1.blocks.0.attn.attention_biases"]
        state["layers.1.blocks.0.attn.attention_biases"] = biases + torch.randn(biases.shape)
        model.load_state_dict(state)
        changed = model(_pixels()).last_hidden_state
        other = _encoder(seed=1)
        model.load_state_dict(other.state_dict())
        replaced = model(_pixels()).last_hidden_state
        expected = other(_pixels()).last_hidden_state
    assert not torch.allclose(first, changed)
    assert torch.equal(replaced, expected)


def test_from_pretrained_round_trip(tmp_path):
    model = _encoder()
    model.save_pretrained(tmp_path)
    loaded = TinyViTVisionEncoder.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(_pixels()).last_hidden_state, model(_pixels()).last_hidden_state)


def test_relative_offset_index_matches_tinyvit_enumeration():
    for window_size in (1, 3, 7):
        points = list(itertools.product(range(window_size), range(window_size)))
        offsets: dict[tuple[int, int], int] = {}
        expected = []
        for (y1, x1), (y2, x2) in itertools.product(points, points):
            expected.append(offsets.setdefault((abs(y1 - y2), abs(x1 - x2)), len(offsets)))
        n = window_size * window_size
        assert len(offsets) == n
        assert torch.equal(relative_offset_index(window_size), torch.tensor(expected).view(n, n))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(depths=(1, 1)), "depths"),
        (dict(downsample_strides=(2,)), "downsample_strides"),
        (dict(num_heads=(1, 3, 3)), "embed_dims\\[1\\]"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        TinyViTConfig(**{**TINY, **overrides})


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (3, 32, 32), (2, 3, 48, 32)])
def test_wrong_input_shape_is_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch_size, 3, 32, 32\).*got"):
        _encoder()(torch.rand(shape))
