"""Property-based tests (hypothesis) of prompts, metrics and image readers, with a bounded number of examples.

Metrics are compared with MONAI where the semantics match (Dice and HD95 of two non-empty masks). Where they do not,
the difference is asserted as documented: both masks empty -> NaN here (MONAI's ``DiceMetric`` with
``ignore_empty=True`` gives NaN as well, with ``ignore_empty=False`` 1.0), and exactly one empty -> HD95 ``inf``
here where MONAI 1.6's percentile gives NaN or ``inf``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from peft_medsa.data.io import read_image, read_mask
from peft_medsa.metrics import compute_dice, compute_hd95, compute_iou
from peft_medsa.prompts import Prompt, box_iou, jitter_box, negative_points, positive_points, tight_box

BOUNDED = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

masks = arrays(np.bool_, st.tuples(st.integers(3, 24), st.integers(3, 24)))
non_empty = masks.filter(lambda m: m.any())
seeds = st.integers(0, 2**31 - 1)


pairs = st.tuples(st.integers(3, 20), st.integers(3, 20)).flatmap(
    lambda shape: st.tuples(arrays(np.bool_, shape), arrays(np.bool_, shape))
)


def floats(lo: float, hi: float):
    """Finite floats without subnormals (conftest flushes denormals to zero)."""
    return st.floats(lo, hi, allow_subnormal=False)


# -- prompts -------------------------------------------------------------------------------------------------------
@BOUNDED
@given(non_empty, st.integers(1, 5), seeds)
def test_positive_points_fall_on_the_mask(mask, n, seed):
    points = positive_points(mask, n, seed)
    assert points.shape == (n, 2)
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    assert mask[ys, xs].all()  # (x, y): x is the column


@BOUNDED
@given(non_empty.filter(lambda m: not m.all()), st.integers(1, 5), seeds)
def test_negative_points_fall_off_the_mask(mask, n, seed):
    points = negative_points(mask, n, seed)
    assert not mask[points[:, 1].astype(int), points[:, 0].astype(int)].any()


@BOUNDED
@given(non_empty)
def test_tight_box_is_the_smallest_box_holding_the_mask(mask):
    x0, y0, x1, y1 = tight_box(mask).astype(int)
    ys, xs = np.nonzero(mask)
    assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())


@BOUNDED
@given(non_empty, floats(0.3, 0.95), seeds)
def test_jitter_box_reaches_the_target_iou(mask, iou, seed):
    box = tight_box(mask)
    try:
        jittered = jitter_box(box, iou, seed, mask.shape)
    except ValueError as err:  # documented: some boxes cannot reach the target inside a tiny image
        assert "could not jitter box" in str(err)
        return
    assert abs(box_iou(jittered, box) - iou) <= 1e-3
    height, width = mask.shape
    assert 0 <= jittered[0] <= jittered[2] <= width - 1 and 0 <= jittered[1] <= jittered[3] <= height - 1


@BOUNDED
@given(
    arrays(np.float64, st.tuples(st.integers(0, 4), st.just(2)), elements=floats(-1e4, 1e4)),
    floats(0.01, 100), floats(0.01, 100),
)
def test_prompt_scale_round_trips(points, sx, sy):
    prompt = Prompt(points, np.ones(len(points), dtype=np.int64))
    back = prompt.scale(sx, sy).scale(1 / sx, 1 / sy)
    np.testing.assert_allclose(back.points, prompt.points, rtol=1e-5, atol=1e-2)


@BOUNDED
@given(floats(-1e4, 1e4), st.sampled_from([np.nan, np.inf, -np.inf]), st.booleans())
def test_prompt_refuses_any_non_finite_point(good, bad, bad_first):
    point = [bad, good] if bad_first else [good, bad]
    with pytest.raises(ValueError, match="Prompt points must be finite numbers"):
        Prompt([point], [1])


# -- metrics -------------------------------------------------------------------------------------------------------
@BOUNDED
@given(pairs)
def test_dice_matches_monai_and_iou_follows_from_it(masks):
    from monai.metrics import compute_dice as monai_dice

    pred, gt = masks
    ours = compute_dice(pred, gt)
    if not pred.any() and not gt.any():
        assert np.isnan(ours)  # documented: both empty -> NaN, never a silent 1.0
        return
    theirs = float(monai_dice(torch.from_numpy(pred)[None, None].float(), torch.from_numpy(gt)[None, None].float(),
                              ignore_empty=False)[0, 0])
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert compute_iou(pred, gt) == pytest.approx(ours / (2 - ours), abs=1e-6)


@BOUNDED
@given(pairs, floats(0.2, 3.0), floats(0.2, 3.0))
def test_hd95_matches_monai_on_non_empty_masks(masks, sy, sx):
    from monai.metrics import compute_hausdorff_distance

    pred, gt = masks
    ours = compute_hd95(pred, gt, spacing=(sy, sx))
    if pred.any() != gt.any():
        assert ours == np.inf  # documented: a missed object is inf here (MONAI 1.6 may give NaN)
        return
    if not pred.any():
        assert np.isnan(ours)
        return
    theirs = float(compute_hausdorff_distance(torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None],
                                              percentile=95, spacing=[sy, sx])[0, 0])
    assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-4)
    assert compute_hd95(gt, pred, spacing=(sy, sx)) == pytest.approx(ours)  # symmetric


@BOUNDED
@given(non_empty, st.sampled_from([0.0, -1.0, float("nan"), float("inf")]))
def test_hd95_refuses_non_positive_or_non_finite_spacing(mask, bad):
    with pytest.raises(ValueError, match="spacing must be finite and > 0"):
        compute_hd95(mask, mask, spacing=(1.0, bad))


# -- readers -------------------------------------------------------------------------------------------------------
images = st.tuples(st.integers(1, 16), st.integers(1, 16)).flatmap(lambda s: arrays(np.uint8, (*s, 3)))


@BOUNDED
@given(images, st.sampled_from(["png", "bmp", "tif"]))
def test_lossless_images_read_back_exactly(tmp_path, image, suffix):
    path = tmp_path / f"x.{suffix}"
    Image.fromarray(image).save(path)
    np.testing.assert_array_equal(read_image(path), image)


@BOUNDED
@given(st.tuples(st.integers(1, 16), st.integers(1, 16)).flatmap(lambda s: arrays(np.uint16, s)))
def test_16_bit_tiff_is_rescaled_monotonically(tmp_path, grey):
    path = tmp_path / "x.tif"
    Image.fromarray(grey).save(path)
    out = read_image(path)[..., 0].astype(int)
    order = np.argsort(grey, axis=None, kind="stable")
    assert np.all(np.diff(out.ravel()[order]) >= 0)  # brighter stays brighter
    if grey.max() > grey.min():
        assert out.min() == 0 and out.max() == 255


@BOUNDED
@given(st.tuples(st.integers(1, 16), st.integers(1, 16)).flatmap(lambda s: arrays(np.uint8, s)))
def test_grey_masks_read_back_their_values(tmp_path, mask):
    path = tmp_path / "m.png"
    Image.fromarray(mask).save(path)
    np.testing.assert_array_equal(read_mask(path), mask)
