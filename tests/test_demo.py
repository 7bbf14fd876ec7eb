"""The demo's pieces: its data splits and the cached predict_fn it evaluates with."""

from __future__ import annotations

import numpy as np
import pytest

from peft_medsa.demo import ddti_samples, mni152_samples
from peft_medsa.evaluation import evaluate_model
from peft_medsa.inference.predictor import MedSAPredictor, cached_predict_fn
from peft_medsa.prompts import make_prompt

from conftest import shared_data_or_skip, tiny_sam


def test_cached_predict_fn_equals_fresh_predictions():
    model = tiny_sam()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 40, 3), dtype=np.uint8) for _ in range(3)]
    masks = [np.zeros((48, 40), np.uint8) for _ in images]
    for m in masks:
        m[10:30, 8:25] = 1
    cached = cached_predict_fn(MedSAPredictor(model), max_images=2)
    calls = []
    predictor = MedSAPredictor(model)
    original = predictor.set_image
    predictor.set_image = lambda image: (calls.append(1), original(image))[1]
    counted = cached_predict_fn(predictor, max_images=8)
    for setting in ("1pt", "bbox0.75", "3pt"):
        for image, mask in zip(images, masks):
            prompt = make_prompt(mask, setting, np.random.default_rng(1))
            fresh = MedSAPredictor(model)
            fresh.set_image(image)
            expected = fresh.predict(point_coords=prompt.points if len(prompt.points) else None,
                                     point_labels=prompt.labels if len(prompt.points) else None, box=prompt.box)[0][0]
            np.testing.assert_array_equal(cached(image, prompt), expected)
            np.testing.assert_array_equal(counted(image, prompt), expected)
    assert len(calls) == len(images)  # each image embedded once across the three settings


def test_ddti_split_is_fixed_and_disjoint():
    data = shared_data_or_skip()
    train, held_out, _ = ddti_samples(data)
    assert (len(train), len(held_out)) == (14, 6)
    assert not {s["case_id"] for s in train} & {s["case_id"] for s in held_out}
    for sample in train + held_out:
        assert sample["image"].shape[:2] == sample["mask"].shape and sample["image"].shape[2] == 3
        assert set(np.unique(sample["mask"])) == {0, 1}


def test_mni152_split_from_nilearn():
    pytest.importorskip("nilearn")
    train, held_out, description = mni152_samples()
    assert "MNI152" in description and len(held_out) >= 4 and len(train) >= 2 * len(held_out) - 2
    assert not {s["case_id"] for s in train} & {s["case_id"] for s in held_out}
    for sample in held_out:
        assert sample["mask"].sum() >= 50 and sample["image"].dtype == np.uint8


def test_demo_evaluation_runs_on_ground_truth_predictor():
    """The protocol the demo uses scores a perfect predictor at Dice 1 on the demo's held-out data."""
    pytest.importorskip("nilearn")
    _, held_out, _ = mni152_samples()
    by_id = {s["image"].tobytes(): s["mask"] > 0 for s in held_out}
    result = evaluate_model(lambda image, prompt: by_id[image.tobytes()], held_out, "1pt", repeats=1,
                            show_progress=False)
    assert result.summary()[-1]["dice_mean"] == pytest.approx(1.0)
