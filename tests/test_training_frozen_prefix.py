"""The frozen-prefix cache: where it cuts, that it reproduces the full forward, and that training is unchanged."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from peft_medsa import MedSAConfig
from peft_medsa.training import MedSATrainer, TrainingConfig
from peft_medsa.training.frozen_prefix import FrozenPrefixCache
from test_training_utils import toy_samples, trainable_state

from conftest import tiny_lite_medsam_config, tiny_sam

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def tiny_lite_medsam(seed: int = 0):
    from peft_medsa.backbones import LiteMedSamModel

    torch.manual_seed(seed)
    return LiteMedSamModel(tiny_lite_medsam_config()).eval()


def _base(kind: str):
    return tiny_sam() if kind == "sam" else tiny_lite_medsam()


@pytest.mark.parametrize("kind", ["sam", "lite"])
def test_cut_follows_the_first_trainable_block(kind):
    # tiny SAM: 2 ViT blocks (layers 0, 1); tiny TinyViT: MBConv stage 0, then stages 1 and 2 with one block each
    model = get_peft_model(_base(kind), MedSAConfig(r=4, encoder_layers=[1]))
    cache = FrozenPrefixCache.build(model)
    layers = model.base_model.model.vision_encoder.layers
    assert cache is not None and cache.start == len(layers) - 1 and not cache.caches_embeddings
    decoder_only = FrozenPrefixCache.build(get_peft_model(_base(kind), MedSAConfig(r=4, encoder_layers=[])))
    assert decoder_only is not None and decoder_only.caches_embeddings
    everything = get_peft_model(_base(kind), MedSAConfig(r=4))
    if kind == "sam":  # adapters from block 0 on: nothing frozen in front worth caching
        assert FrozenPrefixCache.build(everything) is None
    else:  # TinyViT's stem and MBConv stage carry no adapter
        assert FrozenPrefixCache.build(everything).start == 1
    full = get_peft_model(_base(kind), MedSAConfig(r=4))
    for p in full.parameters():
        p.requires_grad_(True)
    assert FrozenPrefixCache.build(full) is None  # full fine-tuning: nothing is frozen in front
    assert FrozenPrefixCache.build(model, max_megabytes=0) is None


@pytest.mark.parametrize("kind", ["sam", "lite"])
@pytest.mark.parametrize("layers", [[1], []])
def test_cached_embeddings_equal_the_full_forward_with_gradients(kind, layers):
    torch.manual_seed(0)
    model = get_peft_model(_base(kind), MedSAConfig(r=4, encoder_layers=layers, init_weights=False))
    size = model.base_model.model.config.vision_config.image_size
    pixels = torch.randn(3, 3, size, size)
    cache = FrozenPrefixCache.build(model)
    reference = model.get_image_embeddings(pixels)
    first = cache.image_embeddings([0, 1, 2], pixels)
    assert len(cache) == 3
    again = cache.image_embeddings([2, 0], torch.full_like(pixels[:2], float("nan")))  # served from the cache
    torch.testing.assert_close(first, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(again, reference[[2, 0]], rtol=0, atol=1e-6)
    if layers:
        (first * reference.detach()).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
        model.zero_grad()
        encoder = model.base_model.model.vision_encoder  # get_image_embeddings runs without gradients
        (encoder(pixel_values=pixels).last_hidden_state * reference.detach()).sum().backward()
        encoder_grads = [n for n in grads if "vision_encoder" in n]
        assert encoder_grads
        for name in encoder_grads:
            torch.testing.assert_close(grads[name], dict(model.named_parameters())[name].grad, rtol=1e-5, atol=1e-7)


def test_budget_bounds_the_stored_cases():
    model = get_peft_model(tiny_sam(), MedSAConfig(r=4, encoder_layers=[]))
    probe = FrozenPrefixCache.build(model)
    pixels = torch.randn(4, 3, 64, 64)
    probe.image_embeddings([0], pixels[:1])
    one_case_mb = probe.used_bytes / 2**20
    cache = FrozenPrefixCache.build(model, max_megabytes=2.5 * one_case_mb)
    out = cache.image_embeddings([0, 1, 2, 3], pixels)
    assert len(cache) == 2 and cache.used_bytes <= 2.5 * one_case_mb * 2**20
    torch.testing.assert_close(out, model.get_image_embeddings(pixels), rtol=0, atol=1e-6)


@pytest.mark.parametrize("layers", [[1], []])
def test_training_with_the_cache_equals_training_without(tmp_path, layers):
    states = []
    for cached in (True, False):
        torch.manual_seed(0)
        model = get_peft_model(tiny_sam(), MedSAConfig(r=4, encoder_layers=layers))
        cfg = TrainingConfig(output_dir=str(tmp_path / f"run{cached}"), max_steps=3, batch_size=2,
                             learning_rate=5e-3, max_corrective_clicks=2, initial_clicks=2, show_progress=False,
                             cache_frozen_encoder=cached, seed=2)
        trainer = MedSATrainer(model, toy_samples(6), cfg)
        trainer.train()
        assert (trainer.prefix_cache is not None) == cached
        states.append(trainable_state(model))
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        torch.testing.assert_close(states[0][name], states[1][name], rtol=1e-4, atol=1e-6)
