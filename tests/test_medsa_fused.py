"""The fused adapter path (residual and scale folded into the up-projection's matrix product) against the plain
formula ``base + s * up(act(down(x)))``: same outputs and same adapter gradients, for every role, and the plain path
still taken where the fast one does not apply (several adapters, per-sample adapter names)."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

import peft_medsa
from peft_medsa.tuners.adapter import BottleneckAdapter
from peft_medsa.tuners.medsa.layer import MedSALayer

from conftest import tiny_inputs, tiny_sam


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero adapter weights and biases (a zero-initialised up-projection would hide a wrong bias or scale)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adapter" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=g))


def plain(layer: MedSALayer, base: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    name = layer.active_adapters[0]
    adapter = layer.adapters[name]
    return base + layer.scalings[name] * adapter.up(adapter.act(adapter.down(x)))


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_add_adapters_equals_plain_formula_with_gradients(scale):
    model = get_peft_model(tiny_sam(), peft_medsa.MedSAConfig(r=4, scaling=scale))
    randomise(model)
    layers = [m for m in model.modules() if isinstance(m, MedSALayer)
              and isinstance(m.adapters[m.active_adapters[0]], BottleneckAdapter)]
    assert {layer.role for layer in layers} >= {"attn", "mlp", "norm"}
    for layer in layers:
        d = layer.hidden_size
        x = torch.randn(2, 3, 5, d, requires_grad=True)
        base = torch.randn(2, 3, 5, d)
        fused = layer.add_adapters(base, x)
        reference = plain(layer, base, x)
        torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)
        params = list(layer.adapters.parameters())
        g_fused = torch.autograd.grad(fused.square().sum(), [x, *params])
        g_ref = torch.autograd.grad(reference.square().sum(), [x, *params])
        for a, b in zip(g_fused, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_model_output_unchanged_by_fast_path(monkeypatch):
    """A whole Med-SA forward through the fused path equals the forward through ``base + adapter_delta``."""
    model = get_peft_model(tiny_sam(), peft_medsa.MedSAConfig(r=4))
    randomise(model, seed=1)
    model.eval()
    inputs = tiny_inputs()
    with torch.no_grad():
        fused = model(**inputs).pred_masks
        monkeypatch.setattr(MedSALayer, "add_adapters", lambda self, base, x, names=None: base
                            + self.adapter_delta(x, names))
        reference = model(**inputs).pred_masks
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-5)


def test_two_active_adapters_and_adapter_names_take_the_plain_path():
    model = get_peft_model(tiny_sam(), peft_medsa.MedSAConfig(r=4), adapter_name="first")
    model.add_adapter("second", peft_medsa.MedSAConfig(r=4))
    randomise(model, seed=2)
    layer = next(m for m in model.modules() if isinstance(m, MedSALayer) and m.role == "mlp")
    x, base = torch.randn(2, 5, layer.hidden_size), torch.randn(2, 5, layer.hidden_size)
    layer.set_adapter(["first", "second"])
    both = layer.add_adapters(base, x)
    expected = base + sum(layer.scalings[n] * layer.adapters[n].up(layer.adapters[n].act(layer.adapters[n].down(x)))
                          for n in ("first", "second"))
    torch.testing.assert_close(both, expected, rtol=1e-5, atol=1e-6)
    per_sample = layer.add_adapters(base, x, ["first", "__base__"])
    layer.set_adapter("first")
    torch.testing.assert_close(per_sample[0], plain(layer, base[:1], x[:1])[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(per_sample[1], base[1])


def test_windowed_attention_adapter_skips_padding_rows_with_same_outputs_and_gradients(monkeypatch):
    """Tiny SAM block 0: 8 x 8 tokens in windows of 3 (padded to 9 x 9). The attention adapter runs on the 64 real
    tokens per image only; outputs and adapter gradients equal the dense path's (whose padding rows are cropped)."""
    model = get_peft_model(tiny_sam(), peft_medsa.MedSAConfig(r=4))
    randomise(model, seed=3)
    attn = [m for n, m in model.named_modules() if isinstance(m, MedSALayer) and n.endswith("layers.0.attn")]
    assert len(attn) == 1 and attn[0].token_grid == 8
    windows = torch.zeros(2 * 9, 3, 3, 32)  # 2 images x 3 x 3 windows of 3 x 3
    rows = attn[0]._window_real_rows(windows)
    assert rows.numel() == 2 * 64 and len(set(rows.tolist())) == 2 * 64
    flat = torch.zeros(2 * 81)  # rows in window order (b, n_y, n_x, y, x) -> cells of the padded (b, 9, 9) grid
    flat[rows] = 1
    grid = flat.view(2, 3, 3, 3, 3).permute(0, 1, 3, 2, 4).reshape(2, 9, 9)
    assert grid[:, :8, :8].eq(1).all() and grid.sum() == 2 * 64
    global_attn = [m for n, m in model.named_modules() if isinstance(m, MedSALayer) and n.endswith("layers.1.attn")]
    assert global_attn[0]._window_real_rows(torch.zeros(2, 8, 8, 32)) is None  # global attention: no windows

    inputs = tiny_inputs()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def run():
        loss = model(**inputs).pred_masks.square().mean()
        return loss, torch.autograd.grad(loss, params)

    loss_fast, grads_fast = run()
    monkeypatch.setattr(MedSALayer, "_window_real_rows", lambda self, hidden: None)
    loss_dense, grads_dense = run()
    torch.testing.assert_close(loss_fast, loss_dense, rtol=1e-5, atol=1e-7)
    for a, b in zip(grads_fast, grads_dense):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
