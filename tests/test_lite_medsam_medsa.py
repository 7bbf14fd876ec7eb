"""Med-SA on the LiteMedSAM (TinyViT) backbone: placement, identity at init, frozen BatchNorm, save / load."""

from __future__ import annotations

import subprocess
import sys

import torch
from peft import PeftModel, get_peft_model
from torch import nn
from transformers import AutoModel

from peft_medsa import MedSAConfig
from peft_medsa.backbones import LiteMedSamModel
from peft_medsa.tuners.medsa.layer import MedSALayer

from conftest import tiny_lite_medsam_config


def tiny_lite_medsam(seed: int = 0) -> LiteMedSamModel:
    """32 px TinyViT (stages 8/16/24 wide, windows 7/7/5 with padding) + 32-wide SAM prompt encoder and decoder."""
    torch.manual_seed(seed)
    config = tiny_lite_medsam_config(depths=(1, 2, 1), initializer_range=0.2)
    model = LiteMedSamModel(config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def inputs() -> dict:
    g = torch.Generator().manual_seed(3)
    return {"pixel_values": torch.rand(2, 3, 32, 32, generator=g),
            "input_boxes": torch.tensor([[[2.0, 3.0, 20.0, 25.0]], [[8.0, 4.0, 30.0, 14.0]]]),
            "multimask_output": False}


def run(model) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs()).pred_masks


def test_adapters_in_tinyvit_blocks_and_identity_at_init():
    base = run(tiny_lite_medsam())
    model = get_peft_model(tiny_lite_medsam(), MedSAConfig(r=4))
    layers = {n.removeprefix("base_model.model."): m for n, m in model.named_modules() if isinstance(m, MedSALayer)}
    encoder = {n: m.role for n, m in layers.items() if n.startswith("vision_encoder")}
    # TinyViT: stage 0 is convolutional; stages 1-2 hold 2 + 1 attention blocks, each with attn and mlp adapters
    assert encoder == {f"vision_encoder.layers.{s}.blocks.{b}.{p}": p for s, b in ((1, 0), (1, 1), (2, 0))
                       for p in ("attn", "mlp")}
    torch.testing.assert_close(run(model), base, rtol=0, atol=0)


def test_training_keeps_batchnorm_frozen_and_round_trips(tmp_path):
    model = get_peft_model(tiny_lite_medsam(), MedSAConfig(r=4))
    stats = {n: b.clone() for n, b in model.named_buffers() if "running" in n}
    model.train()
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        out = model(**inputs())
        out.pred_masks.sigmoid().mean().backward()
        optim.step()
        optim.zero_grad()
    model.eval()
    for name, buffer in model.named_buffers():
        if name in stats:
            torch.testing.assert_close(buffer, stats[name], rtol=0, atol=0)
    trained = run(model)
    assert (trained - run(tiny_lite_medsam())).abs().max() > 1e-6
    model.save_pretrained(tmp_path / "adapter")
    base = tiny_lite_medsam()
    base.save_pretrained(tmp_path / "base")
    torch.save(inputs(), tmp_path / "inputs.pt")
    script = f"""
import torch, peft_medsa
from peft import PeftModel
from transformers import AutoModel
base = AutoModel.from_pretrained({str(tmp_path / 'base')!r}).eval()
model = PeftModel.from_pretrained(base, {str(tmp_path / 'adapter')!r}).eval()
with torch.no_grad():
    torch.save(model(**torch.load({str(tmp_path / 'inputs.pt')!r})).pred_masks, {str(tmp_path / 'out.pt')!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    # Reloaded tensors may sit at other memory alignments, for which GEMM kernels may round differently.
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), trained, rtol=1e-6, atol=1e-9)
    # the same in this process, through the Auto classes
    loaded = PeftModel.from_pretrained(AutoModel.from_pretrained(tmp_path / "base").eval(), tmp_path / "adapter")
    torch.testing.assert_close(run(loaded.eval()), trained, rtol=1e-6, atol=1e-9)
