"""The MEDSA tuner on tiny random SAM models: identity at init, PEFT behaviour, save/load, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import SamModel

import peft_medsa
from peft_medsa import MedSAConfig
from peft_medsa.tuners.hyp.layer import HyperPromptLayer
from peft_medsa.tuners.medsa.layer import MedSALayer

from conftest import REPO_ROOT, tiny_inputs, tiny_sam


def forward(model, inputs, **kwargs):
    with torch.no_grad():
        out = model(**inputs, **kwargs)
    return out.pred_masks, out.iou_scores


def assert_same(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def assert_reloaded(a, b):
    """Outputs of a model and of its save / load round trip: the same weights, but the reloaded tensors may sit at
    other memory alignments, for which the CPU's GEMM kernels may round differently (1e-11 seen)."""
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-9)


def assert_differ(a, b):
    assert (a[0] - b[0]).abs().max() > 1e-6


def random_adapter_model(seed=0, adapter_seed=5, **config):
    model = get_peft_model(tiny_sam(seed), MedSAConfig(r=4, init_weights=False, **config))
    torch.manual_seed(adapter_seed)
    for layer in model.modules():
        if isinstance(layer, MedSALayer):
            for adapter in layer.adapters.values():
                adapter.reset_parameters(zero_init=False)
    return model


def test_identity_at_init():
    inputs = tiny_inputs()
    base = forward(tiny_sam(), inputs)
    model = get_peft_model(tiny_sam(), MedSAConfig(r=8))
    assert_same(forward(model, inputs), base)


def test_adapter_placement_and_roles(sam):
    model = get_peft_model(sam, MedSAConfig(r=4))
    roles = {name.removeprefix("base_model.model."): m.role for name, m in model.named_modules()
             if isinstance(m, MedSALayer)}
    assert roles == {
        "vision_encoder.layers.0.attn": "attn",
        "vision_encoder.layers.0.mlp": "mlp",
        "vision_encoder.layers.1.attn": "attn",
        "vision_encoder.layers.1.mlp": "mlp",
        "mask_decoder.transformer.layers.0.layer_norm2": "hyper",
        "mask_decoder.transformer.layers.0.mlp": "mlp",
        "mask_decoder.transformer.layers.0.layer_norm4": "norm",
        "mask_decoder.transformer.layers.1.layer_norm2": "hyper",
        "mask_decoder.transformer.layers.1.mlp": "mlp",
        "mask_decoder.transformer.layers.1.layer_norm4": "norm",
    }


@pytest.mark.parametrize(
    "config, expected",
    [
        (
            dict(encoder_layers=[1], decoder_adapters=False),
            {"vision_encoder.layers.1.attn", "vision_encoder.layers.1.mlp"},
        ),
        (
            dict(encoder_positions=["mlp"], decoder_adapters=False),
            {"vision_encoder.layers.0.mlp", "vision_encoder.layers.1.mlp"},
        ),
        (dict(target_modules=r".*layers\.0\.attn"), {"vision_encoder.layers.0.attn"}),
    ],
)
def test_config_selects_modules(sam, config, expected):
    model = get_peft_model(sam, MedSAConfig(r=4, **config))
    names = {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, MedSALayer)}
    assert names == expected


def test_adapter_equations_match_reference():
    """Each role computes exactly the paper's formula, checked against a hand-written computation."""
    model = random_adapter_model(scaling=0.3)
    layer = model.base_model.model.vision_encoder.layers[0]
    x = torch.randn(2, 8, 8, 32)
    mlp, attn = layer.mlp, layer.attn
    adapter = mlp.adapters["default"]
    expected = mlp.base_layer(x) + 0.3 * adapter.up(torch.relu(adapter.down(x)))
    torch.testing.assert_close(mlp(x), expected)
    h = attn.base_layer(hidden_states=x)[0]
    a = attn.adapters["default"]
    torch.testing.assert_close(attn(hidden_states=x)[0], h + a.up(torch.relu(a.down(h))))
    norm = model.base_model.model.mask_decoder.transformer.layers[0].layer_norm4
    k = torch.randn(2, 1, 64, 32)
    n = norm.adapters["default"]
    torch.testing.assert_close(norm(k), norm.base_layer(k + n.up(torch.relu(n.down(k)))))


def test_only_adapters_trainable(sam):
    model = get_peft_model(sam, MedSAConfig(r=4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".medsa_adapter.default." in n for n in trainable)
    n_adapters = len([m for m in model.modules() if isinstance(m, MedSALayer)])
    n_hyper = len([m for m in model.modules() if isinstance(m, HyperPromptLayer)])
    # down/up weight and bias each; HyP-Adpt also the prompt projection and three 2-layer weight generators
    assert len(trainable) == 4 * (n_adapters - n_hyper) + (4 + 2 + 3 * 4) * n_hyper


def test_disable_adapter_equals_base():
    inputs = tiny_inputs()
    base = forward(tiny_sam(), inputs)
    model = random_adapter_model()
    assert_differ(forward(model, inputs), base)
    with model.disable_adapter():
        assert_same(forward(model, inputs), base)
    assert_differ(forward(model, inputs), base)


def train_one_step(model, inputs):
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(**inputs)
    loss = out.pred_masks.sigmoid().mean() + out.iou_scores.mean()
    loss.backward()
    optim.step()
    model.eval()


def test_train_step_then_save_and_load_in_fresh_process(tmp_path):
    inputs = tiny_inputs()
    base = tiny_sam()
    base.save_pretrained(tmp_path / "base")
    reloaded_base = SamModel.from_pretrained(tmp_path / "base").eval()
    base_out = forward(reloaded_base, inputs)
    model = get_peft_model(reloaded_base, MedSAConfig(r=4))
    train_one_step(model, inputs)
    trained = forward(model, inputs)
    assert_differ(trained, base_out)
    model.save_pretrained(tmp_path / "adapter")
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert all(".medsa_adapter." in k and ".default." not in k for k in saved)  # adapter-only, name-free keys
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["peft_type"] == "MEDSA"
    torch.save(inputs, tmp_path / "inputs.pt")
    script = f"""
import torch, peft_medsa
from peft import PeftModel
from transformers import SamModel
sam = SamModel.from_pretrained({str(tmp_path / 'base')!r}).eval()
model = PeftModel.from_pretrained(sam, {str(tmp_path / 'adapter')!r}).eval()
inputs = torch.load({str(tmp_path / 'inputs.pt')!r})
with torch.no_grad():
    out = model(**inputs)
torch.save((out.pred_masks, out.iou_scores), {str(tmp_path / 'out.pt')!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    assert_reloaded(torch.load(tmp_path / "out.pt"), trained)


def test_load_without_import_fails_clearly(tmp_path):
    model = get_peft_model(tiny_sam(), MedSAConfig(r=4))
    model.save_pretrained(tmp_path / "adapter")
    script = f"""
from peft import PeftConfig
PeftConfig.from_pretrained({str(tmp_path / 'adapter')!r})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode != 0 and "MEDSA" in result.stderr


def test_multiple_adapters_switch_and_mixed_batch(tmp_path):
    inputs = tiny_inputs(batch=3)
    base = forward(tiny_sam(), inputs)
    a = random_adapter_model(adapter_seed=1)
    b = random_adapter_model(adapter_seed=2)
    out_a, out_b = forward(a, inputs), forward(b, inputs)
    assert_differ(out_a, out_b)
    b.save_pretrained(tmp_path / "b")
    a.load_adapter(tmp_path / "b", adapter_name="b")
    assert_same(forward(a, inputs), out_a)  # loading does not activate
    a.set_adapter("b")
    assert_same(forward(a, inputs), out_b)
    a.set_adapter("default")
    assert_same(forward(a, inputs), out_a)
    mixed = forward(a, inputs, adapter_names=["b", "__base__", "default"])
    for i, reference in enumerate([out_b, base, out_a]):
        torch.testing.assert_close(mixed[0][i], reference[0][i], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mixed[1][i], reference[1][i], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown adapter"):
        forward(a, inputs, adapter_names=["b", "nope", "default"])
    with pytest.raises(ValueError, match="one adapter name per image"):
        forward(a, inputs, adapter_names=["b", "default"])
    a.delete_adapter("b")
    assert "b" not in a.peft_config
    assert all("b" not in m.adapters for m in a.modules() if isinstance(m, MedSALayer))
    assert_same(forward(a, inputs), out_a)


def test_unload_returns_clean_base():
    inputs = tiny_inputs()
    base = forward(tiny_sam(), inputs)
    model = random_adapter_model()
    clean = model.unload()
    assert type(clean) is SamModel
    assert not any(isinstance(m, MedSALayer) for m in clean.modules())
    assert not any("medsa" in n for n, _ in clean.named_parameters())
    assert_same(forward(clean, inputs), base)


def test_merge_refused_with_clear_error():
    model = random_adapter_model()
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_and_unload()
    with pytest.raises(ValueError, match="cannot be merged"):
        model.merge_adapter()


def test_modules_to_save_trains_and_round_trips(tmp_path):
    inputs = tiny_inputs()
    model = get_peft_model(tiny_sam(), MedSAConfig(r=4, modules_to_save=["iou_prediction_head"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("iou_prediction_head" in n for n in trainable)
    train_one_step(model, inputs)
    trained = forward(model, inputs)
    model.save_pretrained(tmp_path / "a")
    assert any("iou_prediction_head" in k for k in load_file(tmp_path / "a" / "adapter_model.safetensors"))
    loaded = PeftModel.from_pretrained(tiny_sam(), tmp_path / "a").eval()
    assert_reloaded(forward(loaded, inputs), trained)


def test_bf16_forward_and_backward():
    inputs = tiny_inputs()
    reference = forward(random_adapter_model(), inputs)
    model = random_adapter_model()
    model.to(torch.bfloat16)
    bf16_inputs = dict(inputs, pixel_values=inputs["pixel_values"].to(torch.bfloat16))
    masks, scores = forward(model, bf16_inputs)
    assert masks.dtype == torch.bfloat16
    torch.testing.assert_close(masks.float(), reference[0], atol=0.15, rtol=0.1)
    out = model(**bf16_inputs)
    out.pred_masks.float().mean().backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g.float()).all() for g in grads)


# -- bad input -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(r=0), "r must be a positive integer, got r=0"),
        (dict(r=-3), "r=-3"),
        (dict(scaling=-0.1), "scaling must be a number >= 0, got scaling=-0.1"),
        (dict(activation="tanh"), r"activation='tanh' is not supported; allowed: \['gelu', 'relu'\]"),
        (dict(encoder_positions=["attn", "ffn"]), r"encoder_positions has unknown value\(s\) \['ffn'\]"),
        (dict(encoder_layers=[-1]), "encoder_layers must be >= 0"),
        (dict(hyper_dim=0), "hyper_dim must be a positive integer or None, got hyper_dim=0"),
    ],
)
def test_invalid_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MedSAConfig(**kwargs)


def test_layer_indices_outside_model(sam):
    with pytest.raises(ValueError, match=r"encoder_layers=\[1, 5\] has indices \[5\] outside the model: .* 2 blocks"):
        get_peft_model(sam, MedSAConfig(encoder_layers=[1, 5]))


def test_not_sam_like_model():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"lacks the expected modules: 'vision_encoder'.*mask_decoder"):
        get_peft_model(model, MedSAConfig())


def test_adapter_of_other_size_refused_and_model_unchanged(tmp_path):
    inputs = tiny_inputs()
    wide = get_peft_model(tiny_sam(hidden_size=48, num_attention_heads=2), MedSAConfig(r=4))
    wide.save_pretrained(tmp_path / "wide")
    sam = tiny_sam()
    base = forward(sam, inputs)
    modules_before = [type(m) for m in sam.modules()]
    with pytest.raises(ValueError, match=r"checkpoint \(4, 48\) vs model \(4, 32\)"):
        PeftModel.from_pretrained(sam, tmp_path / "wide")
    assert [type(m) for m in sam.modules()] == modules_before
    assert not hasattr(sam, "peft_config")
    assert_same(forward(sam, inputs), base)
    # and on a PeftModel that already holds an adapter, the failed load leaves that adapter as it was
    model = random_adapter_model()
    before = forward(model, inputs)
    with pytest.raises(ValueError, match="does not fit this model"):
        model.load_adapter(tmp_path / "wide", adapter_name="wide")
    assert set(model.peft_config) == {"default"}
    assert_same(forward(model, inputs), before)


def test_registered_peft_type():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import PeftType

    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.MEDSA] is MedSAConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.MEDSA] is peft_medsa.MedSAModel
    import importlib

    importlib.reload(peft_medsa._registry)  # registering again is harmless
    peft_medsa._registry.register("medsa", MedSAConfig, peft_medsa.MedSAModel)


def test_peft_without_the_registry_api_fails_at_import_naming_the_version(monkeypatch):
    import importlib

    import peft
    import peft.utils

    monkeypatch.delattr(peft.utils, "register_peft_method")
    monkeypatch.setattr(peft, "__version__", "0.99.0")
    with pytest.raises(ImportError, match=r"this peft 0.99.0 lacks .*install peft>=0.21,<0.22"):
        importlib.reload(peft_medsa._registry)
    monkeypatch.undo()
    importlib.reload(peft_medsa._registry)
    assert "peft>=0.21,<0.22" in (REPO_ROOT / "pyproject.toml").read_text()  # the declared range is the tested one


VIT_SIZES = {
    "vit-base": {},
    "vit-large": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, global_attn_indexes=[5, 11, 17, 23]
    ),
    "vit-huge": dict(
        hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]
    ),
}


@pytest.mark.parametrize("size", list(VIT_SIZES))
def test_sam_sizes_on_meta_device(size):
    """facebook/sam-vit-{base,large,huge} configurations (built on the meta device: no weights are allocated)."""
    from transformers import SamConfig

    with torch.device("meta"):
        sam = SamModel(SamConfig(vision_config=VIT_SIZES[size]))
        model = get_peft_model(sam, MedSAConfig())
    n_blocks = sam.config.vision_config.num_hidden_layers
    layers = [m for m in model.modules() if isinstance(m, MedSALayer)]
    width = sam.config.vision_config.hidden_size
    encoder = [m for m in layers if m.role in ("attn", "mlp") and m.hidden_size == width]
    assert len(encoder) == 2 * n_blocks
    trainable, total = model.get_nb_trainable_parameters()
    if size == "vit-huge":
        assert trainable / total <= 0.025  # the paper: 13M of 636M


def test_failed_load_removes_every_part_of_the_new_adapter(tmp_path):
    """SD-Trans layers hold depth adapters and fusions beside the space adapter: a refused load removes all of them."""
    config = dict(r=4, sd_trans=True)
    wide = get_peft_model(tiny_sam(hidden_size=48, num_attention_heads=2), MedSAConfig(**config))
    wide.save_pretrained(tmp_path / "wide")
    model = get_peft_model(tiny_sam(), MedSAConfig(**config))
    with pytest.raises(ValueError, match="does not fit this model"):
        model.load_adapter(tmp_path / "wide", adapter_name="wide")
    for layer in model.modules():
        if isinstance(layer, MedSALayer):
            for attribute in (*layer.adapter_layer_names, *layer.other_param_names):
                assert "wide" not in (getattr(layer, attribute, None) or {})


def test_trainable_parameters_grow_linearly_in_r():
    """As in the paper's Table 7a: every part, HyP-Adpt included, has a size linear in r for a fixed hyper_dim
    (the default, min(r, 64), is fixed from r = 64 on)."""
    counts = []
    for r in (8, 16, 24):
        model = get_peft_model(tiny_sam(), MedSAConfig(r=r, hyper_dim=8))
        counts.append(model.get_nb_trainable_parameters()[0])
    assert counts[2] - counts[1] == counts[1] - counts[0] > 0
