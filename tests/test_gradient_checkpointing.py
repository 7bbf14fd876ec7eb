"""Activation checkpointing of the frozen image encoder: the gradient of every adapter equals the run without it."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from transformers.modeling_layers import GradientCheckpointingLayer

from peft_medsa import MedSAConfig, SDTransConfig

from conftest import tiny_inputs, tiny_sam


def adapter_gradients(checkpointing: bool, config, **call) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = get_peft_model(tiny_sam(), config)
    if "adapter_names" in call:
        torch.manual_seed(1)
        model.add_adapter("other", config)
        model.base_model.set_requires_grad(["default", "other"], True)
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    checkpointed = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert checkpointed and all(m.gradient_checkpointing == checkpointing for m in checkpointed)
    out = model(**tiny_inputs(batch=2), **call)
    (out.pred_masks.square().mean() + out.iou_scores.mean()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


CASES = {
    "medsa": (MedSAConfig(r=4, init_weights=False), {}),
    "mixed-batch": (MedSAConfig(r=4, init_weights=False), {"adapter_names": ["other", "default"]}),
    "sdtrans": (SDTransConfig(r=4, init_weights=False), {"num_slices": 2}),
    "sdtrans-concat": (SDTransConfig(r=4, init_weights=False, sd_fusion="concat"), {"num_slices": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_adapter_gradients_equal_without_checkpointing(case):
    config, call = CASES[case]
    plain = adapter_gradients(False, config, **call)
    checkpointed = adapter_gradients(True, config, **call)
    assert plain.keys() == checkpointed.keys()
    encoder = [n for n in plain if "vision_encoder" in n]
    assert encoder and all(plain[n].abs().max() > 0 for n in encoder)  # the checkpointed blocks' adapters learn
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-12, msg=name)


def test_eval_mode_checkpointing_equals_and_saves_memory():
    """The trainer's setting: frozen SAM in eval mode, blocks checkpointed whenever gradients are enabled."""
    config = MedSAConfig(r=4, init_weights=False)
    torch.manual_seed(0)
    model = get_peft_model(tiny_sam(), config).eval()
    model.gradient_checkpointing_enable(eval_mode=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = model(**tiny_inputs(batch=2))
    (out.pred_masks.square().mean() + out.iou_scores.mean()).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert not any(m.training for m in model.modules() if not isinstance(m, GradientCheckpointingLayer))
    expected = adapter_gradients(False, config)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-12, msg=name)
    model.gradient_checkpointing_disable()
    plain = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: plain.append(t.numel()) or t, lambda t: t):
        model(**tiny_inputs(batch=2)).pred_masks.sum()
    assert sum(saved) < 0.8 * sum(plain)  # the encoder blocks' activations are not kept


def test_training_config_option(fresh_accelerate, tmp_path):
    from peft_medsa.training import MedSATrainer, TrainingConfig

    model = get_peft_model(tiny_sam(), MedSAConfig(r=4))
    data = [{"image": torch.rand(64, 64, 3).numpy(), "mask": (torch.rand(64, 64) > 0.5).numpy()}]
    config = TrainingConfig(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=1, gradient_checkpointing=True,
                            cpu=True, show_progress=False)
    MedSATrainer(model, data, config)._build()
    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert blocks and all(m.gradient_checkpointing for m in blocks)


def test_reentrant_checkpointing_refused():
    model = get_peft_model(tiny_sam(), MedSAConfig(r=4))
    with pytest.raises(ValueError, match="non-reentrant activation checkpointing only"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})


def test_disable_turns_it_off():
    model = get_peft_model(tiny_sam(), MedSAConfig(r=4))
    model.gradient_checkpointing_enable()
    model.gradient_checkpointing_disable()
    assert not any(m.gradient_checkpointing for m in model.modules() if isinstance(m, GradientCheckpointingLayer))
