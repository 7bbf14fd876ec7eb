"""HyP-Adpt (prompt-conditioned decoder adapters) and fast re-prompting on tiny random SAM models."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model

from peft_medsa import HyPAdptConfig, MedSAConfig
from peft_medsa.prompt_checks import check_model_call, check_prompts
from peft_medsa.tuners.hyp import HyperPromptAdapter, HyperPromptLayer
from peft_medsa.tuners.medsa.layer import MedSALayer

from conftest import tiny_inputs, tiny_sam

D, R, H = 32, 4, 6  # tiny decoder width, adapter rank, hyper width of the equation test


def forward(model, **inputs):
    with torch.no_grad():
        out = model(multimask_output=False, **inputs)
    return out.pred_masks, out.iou_scores


def differ(a, b):
    """Outputs of this tiny random SAM are ~1e-5: compare relative to their size."""
    return (a - b).abs().max() > 1e-2 * b.abs().max()


def assert_batch_equal(got, expected, scale):
    """Equal up to the batching noise of SAM itself: plain SAM decoding a batch vs one sample differs by ~3e-11 on
    outputs of ~1e-4 (CPU GEMM blocking). In-batch mixing of prompts changes outputs by their own size."""
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * float(scale.abs().max()))


def randomize(model, seed=3):
    """Non-zero adapter weights everywhere (up-projections included)."""
    torch.manual_seed(seed)
    for layer in model.modules():
        if isinstance(layer, MedSALayer):
            for adapter in layer.adapters.values():
                adapter.reset_parameters(zero_init=False)
    return model


def points_prompt(batch=2, point_batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(batch, point_batch, 2, 2, generator=g) * 63
    labels = torch.tensor([1, 0]).repeat(batch, point_batch, 1)
    return {"input_points": points, "input_labels": labels}


def boxes_prompt(batch=2, point_batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(batch, point_batch, 2, 2, generator=g) * 63
    return {"input_boxes": torch.cat([corners.min(2).values, corners.max(2).values], dim=-1)}


PROMPTS = {
    "points": points_prompt,
    "boxes": boxes_prompt,
    "both": lambda **kw: {**points_prompt(**kw), **boxes_prompt(**kw, seed=9)},
}


@pytest.fixture(scope="module")
def hyp_model():
    return randomize(get_peft_model(tiny_sam(), HyPAdptConfig(r=R, init_weights=False)))


# -- identity at init, placement ------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [MedSAConfig(r=R), HyPAdptConfig(r=R)], ids=["medsa", "hypadpt"])
def test_identity_at_init(config):
    images = tiny_inputs()["pixel_values"]
    prompt = PROMPTS["both"]()
    base = forward(tiny_sam(), pixel_values=images, **prompt)
    model = get_peft_model(tiny_sam(), config)
    for got, expected in zip(forward(model, pixel_values=images, **prompt), base):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_hypadpt_places_only_the_decoder_slot(hyp_model):
    wrapped = {n.removeprefix("base_model.model.") for n, m in hyp_model.named_modules() if isinstance(m, MedSALayer)}
    assert wrapped == {f"mask_decoder.transformer.layers.{i}.layer_norm2" for i in range(2)}
    trainable = {n for n, p in hyp_model.named_parameters() if p.requires_grad}
    assert trainable and all(".layer_norm2.hypadpt_adapter.default." in n for n in trainable)


# -- the equations --------------------------------------------------------------------------------------------------
def test_hyper_adapter_matches_equations():
    """e_{i+1} = ReLU(Norm(e_i W_i)), W_i = M_i(e_prompt); e_prompt = mean of the projected non-padding tokens."""
    torch.manual_seed(0)
    adapter = HyperPromptAdapter(D, R, zero_init=False, hyper_dim=H)
    x = torch.randn(2, 3, 7, D)
    tokens = torch.randn(2, 3, 4, D)
    tokens[0, 1, 2:] = 0  # two padding tokens (label -10 embeds to exactly 0 in SAM)
    expected = torch.empty(2, 3, 7, D)
    for b in range(2):
        for p in range(3):
            keep = tokens[b, p].abs().sum(-1) > 0
            e_prompt = adapter.prompt_embedding.proj(tokens[b, p][keep]).mean(0)
            e = adapter.down(x[b, p])
            for mlp, (l_in, l_out) in zip(adapter.hyper_mlps, [(R, H), (H, H), (H, R)]):
                w = mlp(e_prompt).reshape(l_in, l_out)  # L_in of the first is r, L_out of the last is r
                e = torch.relu(F.layer_norm(e @ w, (l_out,)))
            expected[b, p] = adapter.up(e)
    torch.testing.assert_close(adapter(x, tokens), expected, rtol=1e-5, atol=1e-6)


def test_slot_computes_norm_of_residual(hyp_model):
    """The wrapped layer_norm2 computes norm(x + HyP(x, prompt)) with the block's own prompt tokens."""
    block = hyp_model.base_model.model.mask_decoder.transformer.layers[1]
    seen = {}

    def record(module, args):
        seen["x"], seen["prompt"] = args[0], module._prompt_tokens

    handle = block.layer_norm2.register_forward_pre_hook(record)
    out = {}
    block.layer_norm2.register_forward_hook(lambda m, a, o: out.setdefault("y", o))
    forward(hyp_model, pixel_values=tiny_inputs()["pixel_values"], **PROMPTS["both"]())
    handle.remove()
    block.layer_norm2._forward_hooks.clear()
    slot = block.layer_norm2
    assert seen["prompt"].shape[-2] == 2 + 2  # two clicks (no padding point with a box) + two box corners
    expected = slot.base_layer(seen["x"] + slot.adapters["default"](seen["x"], seen["prompt"]))
    torch.testing.assert_close(out["y"], expected)
    assert slot._prompt_tokens is None  # released after the block


# -- conditioning on the prompt -------------------------------------------------------------------------------------
def captured_hyper_weights(model, **inputs):
    slot = model.base_model.model.mask_decoder.transformer.layers[0].layer_norm2
    seen = []
    handle = slot.register_forward_pre_hook(lambda m, a: seen.append(m._prompt_tokens))
    masks = forward(model, **inputs)[0]
    handle.remove()
    adapter = slot.adapters["default"]
    with torch.no_grad():
        return masks, adapter.hyper_weights(adapter.prompt_embedding(seen[0]))


def test_output_and_hyper_weights_follow_the_prompt(hyp_model):
    images = tiny_inputs()["pixel_values"]
    masks_a, weights_a = captured_hyper_weights(hyp_model, pixel_values=images, **points_prompt(seed=1))
    masks_b, weights_b = captured_hyper_weights(hyp_model, pixel_values=images, **points_prompt(seed=2))
    assert differ(masks_a, masks_b)
    assert all(differ(wa, wb) for wa, wb in zip(weights_a, weights_b))
    # the hyper weights are a function of the prompt alone: another image, same prompt -> the same weights
    _, weights_c = captured_hyper_weights(hyp_model, pixel_values=images.flip(0), **points_prompt(seed=1))
    for wa, wc in zip(weights_a, weights_c):
        torch.testing.assert_close(wa, wc, rtol=0, atol=0)
    # and the prompt matters through HyP-Adpt, not only through SAM: compare with the adapter disabled
    with hyp_model.disable_adapter():
        plain_a = forward(hyp_model, pixel_values=images, **points_prompt(seed=1))[0]
    assert differ(masks_a, plain_a)


@pytest.mark.parametrize("kind", sorted(PROMPTS))
def test_batch_of_prompts_equals_per_sample_runs(hyp_model, kind):
    """Two images x three prompts each, decoded at once, equal each (image, prompt) decoded alone: no mixing."""
    images = tiny_inputs()["pixel_values"]
    embeddings = hyp_model.get_image_embeddings(images)
    prompt = PROMPTS[kind](batch=2, point_batch=3)
    masks, scores = forward(hyp_model, image_embeddings=embeddings, **prompt)
    assert masks.shape[:2] == (2, 3)
    for b in range(2):
        for p in range(3):
            one = {k: v[b : b + 1, p : p + 1] for k, v in prompt.items()}
            m, s = forward(hyp_model, image_embeddings=embeddings[b : b + 1], **one)
            assert_batch_equal(m[0, 0], masks[b, p], masks)
            assert_batch_equal(s[0, 0], scores[b, p], scores)
            assert differ(m[0, 0], masks[b, (p + 1) % 3])  # the tolerance is far below a prompt's effect


def test_mixed_adapter_batch_uses_each_samples_prompt(tmp_path):
    images = tiny_inputs()["pixel_values"]
    prompt = points_prompt(seed=4)
    a = randomize(get_peft_model(tiny_sam(), HyPAdptConfig(r=R, init_weights=False)), seed=1)
    b = randomize(get_peft_model(tiny_sam(), HyPAdptConfig(r=R, init_weights=False)), seed=2)
    out_a, out_b = forward(a, pixel_values=images, **prompt), forward(b, pixel_values=images, **prompt)
    b.save_pretrained(tmp_path / "b")
    a.load_adapter(tmp_path / "b", adapter_name="b")
    mixed = forward(a, pixel_values=images, adapter_names=["b", "default"], **prompt)
    assert_batch_equal(mixed[0][0], out_b[0][0], out_b[0])
    assert_batch_equal(mixed[0][1], out_a[0][1], out_a[0])
    assert differ(out_a[0][0], out_b[0][0])


# -- fast re-prompting ----------------------------------------------------------------------------------------------
def test_cached_image_embeddings_decode_like_full_forward():
    model = randomize(get_peft_model(tiny_sam(), MedSAConfig(r=R, init_weights=False)))
    images = tiny_inputs()["pixel_values"]
    embeddings = model.get_image_embeddings(images)  # PeftModel -> SamModel.get_image_embeddings
    assert differ(embeddings, tiny_sam().get_image_embeddings(images))  # encoder adapters active
    with model.disable_adapter():
        torch.testing.assert_close(model.get_image_embeddings(images), tiny_sam().get_image_embeddings(images))
    for seed in range(3):  # a new click each time, same cached embeddings
        prompt = points_prompt(seed=seed)
        full = forward(model, pixel_values=images, **prompt)
        cached = forward(model, image_embeddings=embeddings, **prompt)
        for got, expected in zip(cached, full):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


# -- ablation modes -------------------------------------------------------------------------------------------------
def slot_parameters(mode, d=D, r=R, h=R):  # hyper_dim None -> min(r, 64) = r here
    linear = lambda i, o: i * o + o  # noqa: E731
    shared = linear(d, r) + linear(d, r)  # down-projection, prompt projection
    generators = 3 * linear(h, h) + linear(h, r * h) + linear(h, h * h) + linear(h, h * r)  # M_1..M_3
    return {
        "hyper": linear(d, r) + linear(d, h) + linear(r, d) + generators,
        "add": shared + linear(r, d),
        "concat": shared + linear(2 * r, d),
        "none": linear(d, r) + linear(r, d),
    }[mode]


@pytest.mark.parametrize("mode", ["hyper", "add", "concat", "none"])
def test_ablation_parameter_counts(mode):
    sam = tiny_sam()
    model = get_peft_model(sam, MedSAConfig(r=R, prompt_conditioning=mode))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    encoder = 2 * 2 * (2 * D * R + R + D)  # 2 blocks x (attn, mlp) bottlenecks, encoder width 32
    decoder = 2 * (2 * (2 * D * R + R + D) + slot_parameters(mode))  # 2 blocks x (mlp, norm4, slot 1)
    assert trainable == encoder + decoder
    if mode != "none":
        hyp = get_peft_model(tiny_sam(), HyPAdptConfig(r=R, prompt_conditioning=mode))
        assert sum(p.numel() for p in hyp.parameters() if p.requires_grad) == 2 * slot_parameters(mode)


@pytest.mark.parametrize("mode", ["add", "concat", "none"])
def test_ablation_modes_identity_and_prompt_dependence(mode):
    images = tiny_inputs()["pixel_values"]
    base = forward(tiny_sam(), pixel_values=images, **points_prompt())
    model = get_peft_model(tiny_sam(), MedSAConfig(r=R, prompt_conditioning=mode, encoder_positions=[]))
    torch.testing.assert_close(forward(model, pixel_values=images, **points_prompt())[0], base[0], rtol=0, atol=0)
    randomize(model)
    slot = model.base_model.model.mask_decoder.transformer.layers[0].layer_norm2
    x, tokens = torch.randn(2, 1, 7, D), torch.randn(2, 1, 3, D)
    adapter = slot.adapters["default"]
    if mode == "none":  # a plain bottleneck, no prompt: also usable without one
        assert not slot.requires_prompt()
        forward(model, pixel_values=images)
    else:
        with torch.no_grad():
            assert differ(adapter(x, tokens), adapter(x, tokens + 1))


# -- save / load ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [MedSAConfig(r=R), HyPAdptConfig(r=R)], ids=["medsa", "hypadpt"])
def test_train_save_load_round_trip(tmp_path, config):
    images = tiny_inputs()["pixel_values"]
    prompt = PROMPTS["both"]()
    model = get_peft_model(tiny_sam(), config)
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(pixel_values=images, multimask_output=False, **prompt)
    (out.pred_masks.sigmoid().mean() + out.iou_scores.mean()).backward()
    optim.step()
    model.eval()
    trained = forward(model, pixel_values=images, **prompt)
    base = forward(tiny_sam(), pixel_values=images, **prompt)
    assert differ(trained[0], base[0])
    model.save_pretrained(tmp_path / "a")
    saved_type = json.loads((tmp_path / "a" / "adapter_config.json").read_text())["peft_type"]
    assert saved_type == config.peft_type.value
    loaded = PeftModel.from_pretrained(tiny_sam(), tmp_path / "a").eval()
    assert type(loaded.peft_config["default"]) is type(config)
    for got, expected in zip(forward(loaded, pixel_values=images, **prompt), trained):  # reloaded tensors may be
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)  # aligned otherwise: GEMM rounding differs


def test_unload_removes_slot_and_block_hooks(hyp_model):
    images = tiny_inputs()["pixel_values"]
    model = randomize(get_peft_model(tiny_sam(), MedSAConfig(r=R, init_weights=False)))
    clean = model.unload()
    assert not any(isinstance(m, HyperPromptLayer) for m in clean.modules())
    for block in clean.mask_decoder.transformer.layers:
        assert not block._forward_pre_hooks and not block._forward_hooks
    base = forward(tiny_sam(), pixel_values=images)  # no prompt needed any more
    torch.testing.assert_close(forward(clean, pixel_values=images)[0], base[0], rtol=0, atol=0)


# -- bad input ------------------------------------------------------------------------------------------------------
POINTS = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
LABELS = torch.tensor([[[1, 0]]])


@pytest.mark.parametrize(
    "prompt, match",
    [
        ({"input_points": POINTS + 50, "input_labels": LABELS}, r"input_points has a point \[60.0, 70.0\] outside"),
        ({"input_boxes": torch.tensor([[[0.0, 0.0, 70.0, 30.0]]])}, r"input_boxes has a corner .* outside .*64\]"),
        ({"input_points": POINTS * float("nan"), "input_labels": LABELS}, "input_points has a NaN"),
        ({"input_points": POINTS, "input_labels": LABELS[..., :1]}, r"input_labels must have shape \(1, 1, 2\)"),
        ({"input_points": POINTS, "input_labels": LABELS * 5}, r"input_labels has unknown label\(s\) \[5\]"),
        ({"input_boxes": torch.tensor([[[40.0, 0.0, 10.0, 30.0]]])}, "corners are not XYXY"),
        ({}, "HyP-Adpt conditions the mask decoder on the prompt, but this call has none: pass input_points"),
        ({"input_points": POINTS[:, :, :0], "input_labels": LABELS[:, :, :0]}, r"input_points \(1, 1, 0, 2\) holds"),
        ({"input_points": POINTS, "input_labels": torch.full_like(LABELS, -10)}, "every point of prompt .* padding"),
    ],
    ids=["point-out", "box-out", "nan", "label-shape", "label-value", "box-swapped", "none", "no-point", "pad"],
)
def test_bad_prompts_rejected_at_the_api_boundary(hyp_model, prompt, match):
    with pytest.raises(ValueError, match=match):
        check_model_call(hyp_model, pixel_values=tiny_inputs(batch=1)["pixel_values"], **prompt)


def test_call_without_prompt_still_fails_clearly_inside_the_forward(hyp_model):
    # the forward keeps the checks that need no tensor values: a prompt-conditioned adapter given no prompt token
    with pytest.raises(ValueError, match="HyP-Adpt conditions the mask decoder on the prompt"):
        forward(hyp_model, pixel_values=tiny_inputs(batch=1)["pixel_values"])


def test_padding_points_are_not_range_checked():
    points = torch.tensor([[[[10.0, 20.0], [-10.0, -10.0]]]])  # SamProcessor pads with -10 coordinates and labels
    check_prompts(points, torch.tensor([[[1, -10]]]), image_size=64, require_prompt=True)


@pytest.mark.parametrize(
    "config, kwargs, match",
    [
        (MedSAConfig, dict(prompt_conditioning="mul"), r"prompt_conditioning='mul' is not supported; allowed: \['hy"),
        (HyPAdptConfig, dict(prompt_conditioning="none"), r"HyPAdptConfig.prompt_conditioning='none'.*\['hyper', 'a"),
        (HyPAdptConfig, dict(r=0), "r must be a positive integer, got r=0"),
    ],
)
def test_invalid_config(config, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config(**kwargs)
