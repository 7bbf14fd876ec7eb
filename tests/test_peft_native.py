"""peft's documented API on all three PEFT types (MEDSA, HYPADPT, SDTRANS), as a user would call it for LoRA:
low_cpu_mem_usage, the registered prefixes, inject_adapter_in_model / get/set_peft_model_state_dict, is_trainable,
layer / model status, add / set / delete adapter round trips, torch.compile, a bf16 base and the model card."""

from __future__ import annotations

import warnings

import pytest
import torch
from peft import (
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
from safetensors.torch import load_file, save_file

from peft_medsa import HyPAdptConfig, MedSAConfig, SDTransConfig
from peft_medsa.hub.cards import render_model_card
from peft_medsa.tuners.medsa.layer import MedSALayer

from conftest import tiny_inputs, tiny_sam

CASES = {
    "medsa": (MedSAConfig, "medsa_"),
    "hypadpt": (HyPAdptConfig, "hypadpt_"),
    "sdtrans": (SDTransConfig, "sdtrans_"),
}
ALL_PREFIXES = ("medsa_", "hypadpt_", "sdtrans_")


def config_of(case: str, **kwargs):
    return CASES[case][0](**({"r": 4, "init_weights": False} | kwargs))


def adapted(case: str, seed: int = 0, **kwargs):
    """A PeftModel with random (non-zero) adapters, so that every adapter changes the output."""
    torch.manual_seed(100 + seed)
    return get_peft_model(tiny_sam(), config_of(case, **kwargs)).eval()


def outputs(model, **extra):
    with torch.no_grad():
        out = model(**tiny_inputs(), **extra)
    return out.pred_masks, out.iou_scores


def assert_close(a, b):
    """Equal up to float32 rounding (CPU matmul kernels differ with requires_grad; ~1e-11 on logits of ~1e-4)."""
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-9)


def assert_differ(a, b):
    """The masks differ by more than 0.1% of their scale (tiny random SAM logits are ~1e-5)."""
    assert (a[0] - b[0]).abs().max() > 1e-3 * b[0].abs().max()


def adapter_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if any(f".{prefix}" in n for prefix in ALL_PREFIXES)}


@pytest.mark.parametrize("case", list(CASES))
def test_parameters_carry_the_registered_prefix(case):
    model = adapted(case)
    prefix = PEFT_TYPE_TO_PREFIX_MAPPING[model.peft_config["default"].peft_type]
    assert prefix == CASES[case][1] == model.base_model.prefix
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and trainable == adapter_names(model)
    assert all(f".{prefix}" in n for n in trainable)
    assert not any(f".{other}" in n for n in trainable for other in ALL_PREFIXES if other != prefix)


@pytest.mark.parametrize("case", list(CASES))
def test_low_cpu_mem_usage_load(tmp_path, case):
    model = adapted(case)
    model.save_pretrained(tmp_path / "a")
    expected = outputs(PeftModel.from_pretrained(tiny_sam(), tmp_path / "a").eval())
    loaded = PeftModel.from_pretrained(tiny_sam(), tmp_path / "a", low_cpu_mem_usage=True).eval()
    assert not any(p.is_meta for p in loaded.parameters())
    assert_close(outputs(loaded), expected)
    assert_close(expected, outputs(model))
    # the empty adapters really were created on the meta device
    injected = inject_adapter_in_model(config_of(case), tiny_sam(), low_cpu_mem_usage=True)
    layers = [m for m in injected.modules() if isinstance(m, MedSALayer)]
    assert layers and all(p.is_meta for m in layers for n, p in m.named_parameters() if "base_layer" not in n)
    assert not any(p.is_meta for m in layers for p in m.base_layer.parameters())


@pytest.mark.parametrize("case", list(CASES))
def test_inject_from_state_dict_and_set_state_dict(case):
    model = adapted(case)
    state_dict = get_peft_model_state_dict(model)
    assert state_dict and all(CASES[case][1] in k and ".default." not in k for k in state_dict)
    sam = tiny_sam()
    # the state dict alone (its keys, split at the prefix) tells where the adapters go; keys of a bare model
    bare = {k.removeprefix("base_model.model."): v for k, v in state_dict.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # peft warns when the state dict and the config disagree on the targets
        sam = inject_adapter_in_model(config_of(case), sam, state_dict=bare)
    result = set_peft_model_state_dict(sam, state_dict)
    assert not result.unexpected_keys
    assert_close(outputs(sam.eval()), outputs(model))
    assert set(get_peft_model_state_dict(sam)) == set(bare)


@pytest.mark.parametrize("case", ["hypadpt", "sdtrans"])
def test_files_with_the_old_medsa_prefix_still_load(tmp_path, case):
    model = adapted(case)
    model.save_pretrained(tmp_path / "a")
    path = tmp_path / "a" / "adapter_model.safetensors"
    prefix = CASES[case][1]
    save_file({k.replace(f".{prefix}", ".medsa_"): v for k, v in load_file(path).items()}, path)
    assert all(".medsa_" in k for k in load_file(path))
    loaded = PeftModel.from_pretrained(tiny_sam(), tmp_path / "a").eval()
    assert_close(outputs(loaded), outputs(model))


@pytest.mark.parametrize("case", list(CASES))
def test_from_pretrained_is_trainable_then_train_further(tmp_path, case):
    model = adapted(case)
    model.save_pretrained(tmp_path / "a")
    frozen = PeftModel.from_pretrained(tiny_sam(), tmp_path / "a")
    assert not any(p.requires_grad for p in frozen.parameters())
    loaded = PeftModel.from_pretrained(tiny_sam(), tmp_path / "a", is_trainable=True)
    trainable = {n for n, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}
    before = outputs(loaded.eval())
    loaded.train()
    optimizer = torch.optim.SGD([p for p in loaded.parameters() if p.requires_grad], lr=1.0)
    out = loaded(**tiny_inputs())
    (out.pred_masks.square().mean() + out.iou_scores.mean()).backward()
    assert all(p.grad is None for p in loaded.parameters() if not p.requires_grad)
    optimizer.step()
    assert_differ(outputs(loaded.eval()), before)


@pytest.mark.parametrize("case", list(CASES))
def test_layer_and_model_status(case):
    model = adapted(case)
    layers = [m for m in model.modules() if isinstance(m, MedSALayer)]
    status = model.get_layer_status()
    assert len(status) == len(layers)
    for entry in status:
        assert entry.enabled and entry.active_adapters == ["default"] and entry.available_adapters == ["default"]
        assert entry.requires_grad == {"default": True} and entry.merged_adapters == []
    model.add_adapter("b", config_of(case))
    model_status = model.get_model_status()
    assert model_status.available_adapters == ["b", "default"] and model_status.active_adapters == ["default"]
    assert model_status.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert model_status.enabled is True and model_status.merged_adapters == []
    with model.disable_adapter():
        assert model.get_model_status().enabled is False


@pytest.mark.parametrize("case", list(CASES))
def test_add_set_delete_adapter_round_trip(case):
    model = adapted(case)
    first = outputs(model)
    base = outputs(tiny_sam())
    torch.manual_seed(7)
    model.add_adapter("b", config_of(case))
    assert_close(outputs(model), first)  # adding does not activate
    model.set_adapter("b")
    second = outputs(model)
    assert_differ(second, first) and assert_differ(second, base)
    model.set_adapter("default")
    assert_close(outputs(model), first)
    model.delete_adapter("b")
    assert "b" not in model.peft_config
    assert not any("b" in m.adapters for m in model.modules() if isinstance(m, MedSALayer))
    assert not any(".b." in n for n, _ in model.named_parameters())
    assert_close(outputs(model), first)


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_base(case):
    reference = outputs(adapted(case))
    torch.manual_seed(100)
    model = get_peft_model(tiny_sam().to(torch.bfloat16), config_of(case)).eval()
    adapters = [p for n, p in model.named_parameters() if p.requires_grad]
    frozen = [p for n, p in model.named_parameters() if not p.requires_grad]
    assert adapters and all(p.dtype == torch.float32 for p in adapters)  # peft's autocast_adapter_dtype
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    inputs = tiny_inputs()
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        masks = model(**inputs).pred_masks
    assert masks.dtype == torch.bfloat16
    torch.testing.assert_close(masks.float(), reference[0], atol=0.15, rtol=0.1)
    model.train()
    model(**inputs).pred_masks.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in adapters)


@pytest.mark.parametrize("case", list(CASES))
def test_model_card_names_the_method(case):
    model = adapted(case)
    card = render_model_card(task="liver CT", peft_model=model, base_model="tiny")
    peft_type = model.peft_config["default"].peft_type.value
    assert f"(PeftType {peft_type})" in card and f"PeftType.{peft_type}" in card
    title = {"medsa": "# Med-SA adapter", "hypadpt": "# HyP-Adpt adapter", "sdtrans": "# Med-SA SD-Trans adapter"}
    assert title[case] in card
    assert all(f"PeftType {other}" not in card for other in ("MEDSA", "HYPADPT", "SDTRANS") if other != peft_type)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, backend", [("sdtrans", "inductor"), ("hypadpt", "aot_eager"), ("medsa", "aot_eager")]
)
def test_torch_compile_matches_eager(case, backend):
    """torch.compile gives the eager outputs within 1e-4 relative + 1e-6 absolute (inductor fuses and reorders float32
    reductions, so bit equality is not expected). Inductor (C++ through gcc on CPU) on SDTRANS, whose model holds every
    layer kind (SD-Trans attention, MLP and norm adapters, HyP-Adpt), costs about a minute on 2 cores; the other types
    go through dynamo and AOT autograd only, to keep the suite short."""
    model = adapted(case)
    extra = {"num_slices": 2} if case == "sdtrans" else {}
    eager = outputs(model, **extra)
    compiled = torch.compile(model, backend=backend)
    got = outputs(compiled, **extra)
    for x, y in zip(got, eager):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
    assert_differ(eager, outputs(tiny_sam()))
