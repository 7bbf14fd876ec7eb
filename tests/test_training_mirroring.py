"""Left-right mirroring of training samples (``TrainingConfig.hflip_probability``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import get_peft_model

from peft_medsa import MedSAConfig
from peft_medsa.training import MedSATrainer, TrainingConfig
from peft_medsa.training.inputs import mirror_sample
from peft_medsa.training.sampling import mirror_choices
from test_training_utils import toy_samples, trainable_state

from conftest import tiny_sam

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def test_mirror_sample_flips_image_and_mask_together():
    sample = toy_samples(1, shape=(20, 30))[0]
    mirrored = mirror_sample(sample)
    assert mirrored["case_id"] == sample["case_id"] and mirrored["spacing"] == sample["spacing"]
    np.testing.assert_array_equal(mirrored["image"][:, 0], sample["image"][:, -1])
    np.testing.assert_array_equal(mirrored["mask"][:, 3], sample["mask"][:, 30 - 1 - 3])
    assert (mirrored["image"][mirrored["mask"] > 0] >= 120).all()  # the bright object moved with its mask
    back = mirror_sample(mirrored)
    np.testing.assert_array_equal(back["image"], sample["image"])
    np.testing.assert_array_equal(back["mask"], sample["mask"])
    grey = mirror_sample({"image": np.arange(6).reshape(2, 3), "mask": np.eye(2, 3)})
    np.testing.assert_array_equal(grey["image"], [[2, 1, 0], [5, 4, 3]])


def test_mirror_choices_are_seeded_per_slot():
    assert mirror_choices(0, 5, [0, 1, 2], 0.0) == [False] * 3
    assert mirror_choices(0, 5, [0, 1, 2], 1.0) == [True] * 3
    draws = [mirror_choices(3, m, [0, 1], 0.5) for m in range(200)]
    assert draws == [mirror_choices(3, m, [0, 1], 0.5) for m in range(200)]  # reproducible
    rate = np.mean(draws)
    assert 0.4 < rate < 0.6
    # two processes of batch 1 (slots 0 and 1) mirror what one process of batch 2 mirrors
    assert all(mirror_choices(3, m, [0], 0.5) + mirror_choices(3, m, [1], 0.5) == draws[m] for m in range(200))


def _train(tmp_path, name, samples, steps=3, **options):
    torch.manual_seed(0)
    model = get_peft_model(tiny_sam(), MedSAConfig(r=4, encoder_layers=[1]))
    cfg = TrainingConfig(output_dir=str(tmp_path / name), max_steps=steps, batch_size=2, learning_rate=5e-3,
                         initial_clicks=1, max_corrective_clicks=1, show_progress=False, seed=4, **options)
    trainer = MedSATrainer(model, samples, cfg)
    trainer.train()
    return trainer, trainable_state(model)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)


def test_always_mirroring_equals_training_on_mirrored_data(tmp_path):
    samples = toy_samples(4)
    _, mirrored_on_the_fly = _train(tmp_path, "flip", samples, hflip_probability=1.0)
    _, on_mirrored_data = _train(tmp_path, "data", [mirror_sample(s) for s in samples])
    _, plain = _train(tmp_path, "plain", samples)
    _assert_same(mirrored_on_the_fly, on_mirrored_data)
    assert any(not torch.allclose(mirrored_on_the_fly[n], plain[n]) for n in plain)  # the option does something


def test_mirrored_and_plain_copies_of_a_case_are_cached_apart(tmp_path):
    samples = toy_samples(4)
    cached_trainer, cached = _train(tmp_path, "cached", samples, steps=6, hflip_probability=0.5)
    _, uncached = _train(tmp_path, "uncached", samples, steps=6, hflip_probability=0.5, cache_frozen_encoder=False)
    _assert_same(cached, uncached)  # a shared cache entry would give the mirrored copy the plain one's features
    keys = set(cached_trainer.prefix_cache._store)
    assert any(isinstance(k, tuple) and k[0] in keys for k in keys)  # some case was trained both ways


def test_bad_probability_is_named():
    with pytest.raises(ValueError, match="hflip_probability must be in \\[0, 1\\], got 1.5"):
        TrainingConfig(hflip_probability=1.5)


def test_a_config_stored_before_mirroring_existed_resumes():
    stored = TrainingConfig().to_dict()
    del stored["hflip_probability"]
    assert TrainingConfig().differences(stored) == {}
    assert "hflip_probability" in TrainingConfig(hflip_probability=0.5).differences(stored)
