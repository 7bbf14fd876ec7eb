"""Masks drawn as ellipses (:mod:`peft_medsa.mask_shape`): the fitted ellipse, the choice from the training masks, and
the adapter that records it for the predictor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model

from peft_medsa import MedSAConfig
from peft_medsa.inference import MedSAPredictor
from peft_medsa.mask_shape import (
    apply_mask_shape,
    ellipse_agreement,
    fit_ellipse,
    infer_mask_shape,
    largest_component,
    mask_shape_of_data,
)
from peft_medsa.training import MedSATrainer, TrainingConfig

from conftest import shared_data_or_skip, tiny_sam

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def ellipse(shape, cx, cy, a, b, angle=0.0) -> np.ndarray:
    """A drawn ellipse: centre (cx, cy) (x = column, y = row), semi-axes a, b, rotated by ``angle`` radians."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def reference_fit(mask: np.ndarray) -> np.ndarray:
    """The same ellipse computed plainly: moments of the whole (one-component) mask, every pixel of the grid."""
    ys, xs = np.nonzero(mask)
    centre = np.array([xs.mean(), ys.mean()])
    cov = np.cov(np.stack([xs, ys]), bias=True)
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d = np.stack([xx - centre[0], yy - centre[1]], axis=-1)
    return np.einsum("...i,ij,...j->...", d, np.linalg.inv(cov), d) <= 4.0


def dice(a, b) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_a_drawn_ellipse_is_fitted_back_rotated_and_equal_to_the_plain_computation():
    for angle in (0.0, 0.5, 1.2):
        drawn = ellipse((90, 120), 60.3, 41.7, 30, 14, angle)
        fitted = fit_ellipse(drawn)
        assert dice(fitted, drawn) > 0.98
        assert ellipse_agreement(drawn) > 0.98
        np.testing.assert_array_equal(fitted, reference_fit(drawn))  # the window equals the whole-grid computation
    # an ellipse cut by the image border: the window is clipped, the result still the plain computation
    cut = ellipse((60, 60), 5.0, 30.0, 12, 20, 0.3)
    np.testing.assert_array_equal(fit_ellipse(cut), reference_fit(cut))


def test_only_the_largest_component_is_fitted_and_degenerate_masks_are_returned_unchanged():
    main = ellipse((80, 80), 30, 40, 15, 10, 0.4)
    speck = np.zeros_like(main)
    speck[70:74, 70:74] = True  # a false positive far away
    np.testing.assert_array_equal(largest_component(main | speck), main)
    np.testing.assert_array_equal(fit_ellipse(main | speck), fit_ellipse(main))
    empty = np.zeros((10, 12), dtype=bool)
    np.testing.assert_array_equal(fit_ellipse(empty), empty)
    tiny = empty.copy()
    tiny[2, 3:6] = True  # 3 pixels
    np.testing.assert_array_equal(fit_ellipse(tiny), tiny)
    line = np.zeros((20, 20), dtype=bool)
    line[5, 2:18] = True  # no area: the covariance is singular
    np.testing.assert_array_equal(fit_ellipse(line), line)
    assert np.isnan(ellipse_agreement(empty))
    with pytest.raises(ValueError, match=r"one \(H, W\) mask, got shape \(2, 10, 12\)"):
        fit_ellipse(np.zeros((2, 10, 12)))


def test_the_shape_is_chosen_from_the_masks():
    ellipses = [ellipse((64, 64), 30 + i, 32, 10 + i, 6 + i, 0.3 * i) for i in range(5)]
    assert infer_mask_shape(ellipses) == "ellipse"
    rectangles = []
    for i in range(5):
        mask = np.zeros((64, 64), dtype=bool)
        mask[10 : 30 + i, 12 : 40 - i] = True
        rectangles.append(mask)
    assert infer_mask_shape(rectangles) is None  # a rectangle agrees with its ellipse to about 0.9
    assert infer_mask_shape([*ellipses[:2], *rectangles]) is None  # the median decides
    assert infer_mask_shape([np.zeros((8, 8), dtype=bool)]) is None  # nothing to look at
    samples = [{"mask": np.zeros((64, 64), np.uint8)}] + [{"mask": m.astype(np.uint8)} for m in ellipses]
    assert mask_shape_of_data(samples) == "ellipse"
    assert mask_shape_of_data(samples, indices=[0]) is None  # only the rows asked for: here an empty one
    assert mask_shape_of_data(samples[:1] + [{"mask": m.astype(np.uint8)} for m in rectangles]) is None


def test_apply_mask_shape_fits_each_mask_and_none_leaves_them():
    masks = np.stack([ellipse((40, 50), 20, 20, 9, 5, 0.2), ellipse((40, 50), 25, 18, 6, 8)])
    masks[0, 5:8, 5:8] = True
    shaped = apply_mask_shape(masks, "ellipse")
    assert shaped.shape == masks.shape and shaped.dtype == bool
    for k in range(2):
        np.testing.assert_array_equal(shaped[k], fit_ellipse(masks[k]))
    assert apply_mask_shape(masks, None) is masks
    with pytest.raises(ValueError, match=r"mask_shape='circle' is not supported; expected None .* \['ellipse'\]"):
        apply_mask_shape(masks, "circle")


def test_the_adapter_config_records_the_shape_and_refuses_others(tmp_path):
    with pytest.raises(ValueError, match="MedSAConfig.mask_shape='box' is not supported"):
        MedSAConfig(mask_shape="box")
    model = get_peft_model(tiny_sam(), MedSAConfig(r=4, mask_shape="ellipse"))
    model.save_pretrained(tmp_path / "adapter")
    stored = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert stored["mask_shape"] == "ellipse"
    loaded = PeftModel.from_pretrained(tiny_sam(), tmp_path / "adapter")
    assert loaded.peft_config["default"].mask_shape == "ellipse"


def _predictions(model, mask_shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    predictor = MedSAPredictor(model, mask_shape=mask_shape)
    predictor.set_image(image)
    return predictor, predictor.predict(box=[10, 8, 60, 50], multimask_output=True)[0]


def test_the_predictor_fits_ellipses_for_an_adapter_that_records_them():
    torch.manual_seed(0)
    config = MedSAConfig(r=4, init_weights=False, mask_shape="ellipse")
    model = get_peft_model(tiny_sam(), config)
    predictor, shaped = _predictions(model, "auto")
    assert predictor.mask_shape == "ellipse"
    _, raw = _predictions(model, None)
    assert raw.any() and not np.array_equal(raw, shaped)  # a random model's masks are not ellipses
    np.testing.assert_array_equal(shaped, apply_mask_shape(raw, "ellipse"))
    config.mask_shape = None  # an adapter without a shape: auto gives the masks as predicted
    predictor, plain = _predictions(model, "auto")
    assert predictor.mask_shape is None
    np.testing.assert_array_equal(plain, raw)
    _, forced = _predictions(model, "ellipse")  # asked for, whatever the adapter records
    np.testing.assert_array_equal(forced, shaped)
    with pytest.raises(ValueError, match="mask_shape='oval' is not supported"):
        MedSAPredictor(model, mask_shape="oval")


def _train(tmp_path, masks, **options):
    rng = np.random.default_rng(0)
    samples = []
    for i, mask in enumerate(masks):
        image = rng.integers(0, 120, (*mask.shape, 3), dtype=np.uint8)
        image[mask] += 120
        samples.append({"image": image, "mask": mask.astype(np.uint8), "case_id": f"c{i}"})
    model = get_peft_model(tiny_sam(), MedSAConfig(r=4, encoder_layers=[1]))
    config = TrainingConfig(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=2, show_progress=False,
                            **options)
    MedSATrainer(model, samples, config).train()
    return json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())["mask_shape"]


def test_training_records_the_shape_of_its_masks_in_the_adapter(tmp_path):
    ellipses = [ellipse((48, 56), 28 + i, 22, 12, 8, 0.4 * i) for i in range(4)]
    assert _train(tmp_path / "a", ellipses) == "ellipse"
    squares = []
    for i in range(4):
        mask = np.zeros((48, 56), dtype=bool)
        mask[10 + i : 30, 12 : 36 + i] = True
        squares.append(mask)
    assert _train(tmp_path / "b", squares) is None
    assert _train(tmp_path / "c", squares, mask_shape="ellipse") == "ellipse"  # asked for
    assert _train(tmp_path / "d", ellipses, mask_shape=None) is None
    with pytest.raises(ValueError, match=r"TrainingConfig.mask_shape='oval'; expected one of \('auto', None"):
        TrainingConfig(mask_shape="oval")


def test_the_real_sets_drawn_as_ellipses_are_recognised_from_their_training_masks():
    root = shared_data_or_skip()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from _real_data_sets import DATASETS, list_pairs, load_sample, split_pairs

    shapes = {}
    for name in ("origa_cup", "origa_disc", "isic", "ddti"):
        train, _ = split_pairs(list_pairs(DATASETS[name], root))
        shapes[name] = mask_shape_of_data([load_sample(DATASETS[name], *pair) for pair in train[:8]])
    # ORIGA's disc and cup are drawn as ellipses; skin lesions and thyroid nodules are traced
    assert shapes == {"origa_cup": "ellipse", "origa_disc": "ellipse", "isic": None, "ddti": None}


def test_the_model_card_of_an_ellipse_adapter_says_so():
    from peft_medsa.hub.cards import render_model_card

    model = get_peft_model(tiny_sam(), MedSAConfig(r=4, mask_shape="ellipse"))
    card = render_model_card(task="optic cup segmentation", peft_model=model)
    assert "| mask_shape | `ellipse` |" in card
    assert "returns the ellipse fitted to each predicted mask" in card
    plain = render_model_card(task="skin lesion segmentation", peft_model=get_peft_model(tiny_sam(), MedSAConfig(r=4)))
    assert "mask_shape" not in plain and "ellipse" not in plain
