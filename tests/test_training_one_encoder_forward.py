"""One image-encoder forward per training micro-batch: the corrective clicks are simulated on the training forward's
own embeddings (detached) instead of a second, gradient-free encoder forward. The trained weights must equal those
of the reference path (``trainer.one_encoder_forward = False``), and the encoder must run once per micro-batch."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from peft_medsa import MedSAConfig
from peft_medsa.training import MedSATrainer, TrainingConfig
from test_training_utils import toy_samples, trainable_state

from conftest import tiny_sam

pytestmark = pytest.mark.usefixtures("fresh_accelerate")

STEPS = 4


def _model(kind: str):
    torch.manual_seed(0)
    if kind == "full":  # every parameter trained: the frozen-prefix cache does not apply
        model = get_peft_model(tiny_sam(), MedSAConfig(r=4, encoder_layers=[], init_weights=True))
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    return get_peft_model(tiny_sam(), MedSAConfig(r=4, encoder_layers=[1] if kind == "encoder" else []))


def _train(tmp_path, kind: str, one_forward: bool, cached: bool):
    model = _model(kind)
    calls = []
    neck = model.get_base_model().vision_encoder.neck
    handle = neck.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    cfg = TrainingConfig(output_dir=str(tmp_path / f"{kind}-{one_forward}-{cached}"), max_steps=STEPS, batch_size=2,
                         learning_rate=5e-3, max_corrective_clicks=2, initial_clicks=1, show_progress=False,
                         cache_frozen_encoder=cached, hflip_probability=0.5, seed=3)
    trainer = MedSATrainer(model, toy_samples(6), cfg)
    trainer.one_encoder_forward = one_forward
    trainer.train()
    handle.remove()
    return trainable_state(model), calls


@pytest.mark.parametrize("kind,cached", [("encoder", True), ("encoder", False), ("decoder", True), ("full", False)])
def test_one_encoder_forward_trains_the_same_weights_as_the_reference_path(tmp_path, kind, cached):
    fast, fast_calls = _train(tmp_path, kind, True, cached)
    reference, reference_calls = _train(tmp_path, kind, False, cached)
    assert fast.keys() == reference.keys() and fast
    for name in fast:
        torch.testing.assert_close(fast[name], reference[name], rtol=1e-4, atol=1e-6)
    if kind != "decoder":  # the encoder's trainable part runs once per micro-batch, not again for the clicks
        assert len(fast_calls) == STEPS
        assert len(reference_calls) > STEPS  # seed 3 draws corrective clicks in some of these steps
