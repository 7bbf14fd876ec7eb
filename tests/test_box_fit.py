"""Box fit: a predicted mask made to span a box prompt that agrees with its extent."""

from __future__ import annotations

import numpy as np
import pytest

from peft_medsa.box_fit import check_box_fit, ellipse_to_box, extent_agreement, fit_to_box, mask_box, stretch_to_box
from peft_medsa.mask_shape import draw_ellipse
from peft_medsa.prompts import box_iou, tight_box


def _ellipse(cx, cy, rx, ry, shape=(90, 110)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def test_a_mask_is_unchanged_by_its_own_box_and_fills_a_larger_one():
    mask = np.zeros((40, 50), dtype=bool)
    mask[10:20, 5:25] = True
    mask[12, 30] = True  # a stray pixel widens the extent: x 5..30
    np.testing.assert_array_equal(stretch_to_box(mask, mask_box(mask)), mask)
    box = np.array([5, 8, 30, 21])  # two rows more on each side
    stretched = stretch_to_box(mask, box)
    assert tight_box(stretched).tolist() == box.tolist()
    assert not stretched[:8].any() and not stretched[22:].any() and not stretched[:, 31:].any()
    np.testing.assert_array_equal(stretched[8:22, 5:25], True)  # the block, now 14 rows high
    rectangle = np.zeros_like(mask)
    rectangle[3:7, 2:6] = True
    filled = stretch_to_box(rectangle, [10, 20, 40, 35])
    assert filled.sum() == 31 * 16 and filled[20:36, 10:41].all()
    assert not stretch_to_box(np.zeros_like(mask), box).any()


def test_the_ellipse_of_an_upright_mask_becomes_the_ellipse_inscribed_in_the_box():
    mask = _ellipse(50.3, 41.7, 18.2, 11.4)
    box = np.array([20, 25, 85, 62])
    x0, y0, x1, y1 = box
    reference = _ellipse((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2)
    fitted = ellipse_to_box(mask, box)
    assert (fitted != reference).sum() <= 0.01 * reference.sum()  # the fit's tilt is ~0, not exactly 0
    assert tight_box(fitted).tolist() == box.tolist()


def test_a_tilted_ellipse_keeps_its_tilt_and_takes_the_box_extent():
    cov = np.array([[200.0, 120.0], [120.0, 150.0]])
    tilted = draw_ellipse((100, 120), 60.0, 50.0, cov)
    box = tight_box(tilted)
    refit = ellipse_to_box(tilted, box)
    assert 2 * (refit & tilted).sum() / (refit.sum() + tilted.sum()) > 0.99
    smaller = draw_ellipse((100, 120), 58.0, 47.0, cov * 0.7)  # the same tilt, too small, off centre
    grown = ellipse_to_box(smaller, box)
    assert 2 * (grown & tilted).sum() / (grown.sum() + tilted.sum()) > 0.97
    assert tight_box(grown).tolist() == box.tolist()


def test_the_agreement_is_the_iou_of_the_masks_box_and_the_fit_is_chosen_by_name():
    mask = _ellipse(50, 40, 20, 12)
    own = mask_box(mask)
    loose = own + np.array([-12, -9, 12, 9])
    assert extent_agreement(mask, own) == 1.0
    assert extent_agreement(mask, loose) == pytest.approx(box_iou(own, loose))
    assert extent_agreement(np.zeros_like(mask), own) == 0.0
    assert extent_agreement(mask, loose) < 0.4  # 41 x 25 pixels inside 65 x 43
    np.testing.assert_array_equal(fit_to_box(mask, loose, "stretch"), stretch_to_box(mask, loose))
    np.testing.assert_array_equal(fit_to_box(mask, loose, "ellipse"), ellipse_to_box(mask, loose))
    np.testing.assert_array_equal(fit_to_box(mask.astype(np.uint8), loose, None), mask)


def test_boxes_are_rounded_and_clipped_to_the_image():
    mask = np.zeros((30, 30), dtype=bool)
    mask[10:20, 10:20] = True
    out = stretch_to_box(mask, [-4.6, 9.6, 40.2, 19.4])
    assert tight_box(out).tolist() == [0, 10, 29, 19]


def test_an_unknown_fit_is_refused_by_name():
    with pytest.raises(ValueError, match=r"box_fit='square'.*'stretch', 'ellipse'"):
        check_box_fit("square")
    with pytest.raises(ValueError, match="box_fit='circle'"):
        fit_to_box(np.ones((4, 4), bool), [0, 0, 3, 3], "circle")


def test_the_predictor_fits_box_masks_only_when_asked_and_auto_follows_the_adapters_shape():
    import torch
    from peft import get_peft_model

    from peft_medsa import MedSAConfig
    from peft_medsa.inference import MedSAPredictor

    from conftest import tiny_sam

    image = np.random.default_rng(0).integers(0, 255, (48, 56, 3), dtype=np.uint8)
    box = [10, 8, 40, 30]
    torch.manual_seed(0)
    plain = MedSAPredictor(tiny_sam())
    plain.set_image(image)
    raw = plain.predict(box=box)[0][0]
    assert plain.box_fit is None and raw.any()
    stretch = MedSAPredictor(plain.model, box_fit="stretch")
    stretch.set_image(image)
    np.testing.assert_array_equal(stretch.predict(box=box)[0][0], stretch_to_box(raw, box))
    np.testing.assert_array_equal(stretch.predict(point_coords=[[20, 20]])[0][0],
                                  plain.predict(point_coords=[[20, 20]])[0][0])  # clicks alone: no box to span
    assert MedSAPredictor(plain.model, box_fit="auto").box_fit == "stretch"
    ellipse_model = get_peft_model(tiny_sam(), MedSAConfig(r=4, mask_shape="ellipse"))
    assert MedSAPredictor(ellipse_model, box_fit="auto").box_fit == "ellipse"
    assert MedSAPredictor(ellipse_model, box_fit="auto", mask_shape=None).box_fit == "stretch"
    with pytest.raises(ValueError, match="box_fit='tight'"):
        MedSAPredictor(plain.model, box_fit="tight")
