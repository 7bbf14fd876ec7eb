"""Dice, IoU and HD95: hand-computed cases, empty-mask rules, and cross-checks against MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from peft_medsa.metrics import (
    SegmentationMetrics,
    compute_dice,
    compute_hd95,
    compute_iou,
    evaluate_module_path,
    mask_surface,
)

# MONAI 1.6 deprecates an argument that it passes to itself; not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def square(shape, top, left, side):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[top : top + side, left : left + side] = 1
    return mask


def blobs(shape, seed, threshold=0.15):
    """Smooth random blobs (more like organs than white noise)."""
    noise = np.random.default_rng(seed).standard_normal(shape)
    return ndimage.gaussian_filter(noise, sigma=2.0) > threshold


def onehot(mask):
    return torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]


class TestHandComputed:
    def test_squares_offset_by_k_pixels(self):
        gt = square((40, 40), 10, 10, 10)
        pred = square((40, 40), 10, 13, 10)  # shifted right by k = 3: overlap 10 x 7
        assert compute_dice(pred, gt) == pytest.approx(2 * 70 / 200)
        assert compute_iou(pred, gt) == pytest.approx(70 / 130)
        assert compute_hd95(pred, gt, percentile=100) == pytest.approx(3.0)
        assert compute_hd95(pred, gt, spacing=(1.0, 0.5), percentile=100) == pytest.approx(1.5)

    def test_dilated_square_has_hd95_k_in_physical_units(self):
        # Every surface point of the inner square is exactly k from the outer one and vice versa, except the 12
        # outer points next to the corners (< 5% of 412), so the 95th percentile is exactly k.
        gt = square((111, 111), 5, 5, 101)
        pred = ndimage.binary_dilation(gt, iterations=2, structure=np.ones((3, 3)))
        assert compute_hd95(pred, gt) == pytest.approx(2.0)
        assert compute_hd95(pred, gt, spacing=0.5) == pytest.approx(1.0)

    def test_surface_is_the_outer_ring_including_image_edge(self):
        mask = square((6, 6), 0, 0, 4)
        surface = mask_surface(mask)
        assert surface.sum() == 12  # 4 x 4 square: 16 pixels, 4 interior
        assert not surface[1:3, 1:3].any()

    def test_identical_masks(self):
        gt = square((20, 20), 3, 4, 7)
        assert compute_dice(gt, gt) == 1.0
        assert compute_iou(gt, gt) == 1.0
        assert compute_hd95(gt, gt) == 0.0


class TestEmptyMasks:
    def test_both_empty_is_nan_unless_empty_score_given(self):
        empty = np.zeros((8, 8), dtype=np.uint8)
        for fn in (compute_dice, compute_iou, compute_hd95):
            assert math.isnan(fn(empty, empty))
            assert fn(empty, empty, empty_score=1.0) == 1.0

    def test_one_side_empty(self):
        empty = np.zeros((8, 8), dtype=np.uint8)
        mask = square((8, 8), 2, 2, 3)
        for pred, gt in ((mask, empty), (empty, mask)):
            assert compute_dice(pred, gt) == 0.0
            assert compute_iou(pred, gt) == 0.0
            assert compute_hd95(pred, gt) == math.inf
            assert compute_hd95(pred, gt, one_empty_score=99.0) == 99.0

    def test_matches_monai_empty_conventions(self):
        from monai.metrics import DiceMetric, compute_hausdorff_distance

        empty = np.zeros((8, 8), dtype=np.uint8)
        mask = square((8, 8), 2, 2, 3)
        monai_dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
        assert monai_dice(onehot(mask), onehot(empty)).item() == compute_dice(mask, empty) == 0.0
        # MONAI's Hausdorff distance is inf with one side empty; its 95th percentile of all-inf distances comes out
        # NaN (inf - inf in the quantile's interpolation), which we do not copy: a missed organ stays inf.
        for pred, gt in ((empty, mask), (mask, empty)):
            with pytest.warns(UserWarning):
                monai_hd = compute_hausdorff_distance(onehot(pred), onehot(gt), include_background=True)
            assert monai_hd.item() == compute_hd95(pred, gt, percentile=100) == compute_hd95(pred, gt) == math.inf

    def test_shape_mismatch_raises(self):
        with pytest.raises(ValueError, match="same shape"):
            compute_dice(np.zeros((4, 4)), np.zeros((4, 5)))
        with pytest.raises(ValueError, match="spacing"):
            compute_hd95(np.ones((4, 4)), np.ones((4, 4)), spacing=(1.0, 1.0, 1.0))


class TestAgainstMonai:
    @pytest.mark.parametrize(
        ("shape", "spacing"),
        [((48, 64), None), ((48, 64), (0.7, 1.3)), ((12, 32, 40), (3.0, 0.8, 0.8)), ((12, 32, 40), (1.0, 2.5, 0.5))],
    )
    @pytest.mark.parametrize("seed", [0, 1])
    def test_random_masks(self, shape, spacing, seed):
        from monai.metrics import DiceMetric, MeanIoU, compute_hausdorff_distance

        gt, pred = blobs(shape, seed), blobs(shape, seed + 100)
        dice = DiceMetric(include_background=True, reduction="none")(onehot(pred), onehot(gt)).item()
        iou = MeanIoU(include_background=True, reduction="none")(onehot(pred), onehot(gt)).item()
        hd95 = compute_hausdorff_distance(
            onehot(pred), onehot(gt), include_background=True, percentile=95, spacing=spacing
        ).item()
        assert compute_dice(pred, gt) == pytest.approx(dice, rel=1e-6)
        assert compute_iou(pred, gt) == pytest.approx(iou, rel=1e-6)
        assert compute_hd95(pred, gt, spacing=spacing) == pytest.approx(hd95, rel=1e-5)

    @pytest.mark.parametrize("where", ["edge", "small"])
    def test_cropped_surfaces_match_at_the_array_edge_and_far_inside(self, where):
        # surfaces are taken on the union's bounding box (+1 voxel): masks that touch the array's edge (outside counts
        # as background) and small masks far inside a large volume must give MONAI's full-array distances
        from monai.metrics import compute_hausdorff_distance

        gt = np.zeros((12, 40, 40), dtype=bool)
        pred = np.zeros_like(gt)
        if where == "edge":
            gt[:, :15, :20], pred[:, :18, 3:25], pred[0, 30:, 30:] = True, True, True
        else:
            gt[5:7, 20:24, 18:23], pred[6:8, 21:26, 19:22] = True, True
        spacing = (3.0, 0.8, 0.7)
        reference = compute_hausdorff_distance(
            onehot(pred), onehot(gt), include_background=True, percentile=95, spacing=spacing
        ).item()
        assert compute_hd95(pred, gt, spacing=spacing) == pytest.approx(reference, rel=1e-6)

    def test_label_maps_per_class(self):
        from monai.metrics import DiceMetric, compute_hausdorff_distance

        rng = np.random.default_rng(3)
        gt = ndimage.gaussian_filter(rng.standard_normal((10, 30, 30)), 2.0)
        gt = np.digitize(gt, [-0.1, 0.0, 0.1])  # labels 0..3
        pred = np.roll(gt, 2, axis=2)
        labels = [1, 2, 3]
        spacing = (2.0, 0.9, 0.9)
        to_onehot = lambda m: torch.as_tensor(np.stack([m == c for c in labels]).astype(np.float32))[None]  # noqa: E731
        dice = DiceMetric(include_background=True, reduction="none")(to_onehot(pred), to_onehot(gt))[0].numpy()
        hd = compute_hausdorff_distance(
            to_onehot(pred), to_onehot(gt), include_background=True, percentile=95, spacing=spacing
        )[0].numpy()
        np.testing.assert_allclose(compute_dice(pred, gt, labels=labels), dice, rtol=1e-6)
        np.testing.assert_allclose(compute_hd95(pred, gt, spacing=spacing, labels=labels), hd, rtol=1e-5)
        assert compute_iou(pred, gt, labels=labels)[1] == pytest.approx(compute_iou(pred == 2, gt == 2))


class TestSegmentationMetrics:
    def test_accumulates_per_case_and_class(self):
        gt = np.zeros((20, 20), dtype=np.uint8)
        gt[2:8, 2:8] = 1
        gt[10:18, 10:18] = 2
        pred = gt.copy()
        pred[10:18, 10:14] = 0  # class 2 half missed
        metric = SegmentationMetrics(labels={1: "disc", 2: "cup"})
        rows = metric.update(pred, gt, case_id="a")
        assert [r["class"] for r in rows] == ["disc", "cup"]
        assert rows[1]["dice"] == pytest.approx(2 * 32 / (32 + 64))
        only_disc = np.where(gt == 2, 0, gt)
        metric.update(only_disc, only_disc, case_id="b")  # cup empty on both sides: NaN, skipped by the mean
        summary = metric.aggregate()
        assert len(metric) == 2
        assert summary["disc"] == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "n_cases": 2}
        assert summary["cup"]["dice"] == pytest.approx(rows[1]["dice"])
        assert summary["cup"]["n_cases"] == 1
        assert math.isnan(metric.records[3]["dice"])
        metric.reset()
        assert metric.records == [] and len(metric) == 0

    def test_spacing_is_used(self):
        gt = square((111, 111), 5, 5, 101)
        pred = ndimage.binary_dilation(gt, iterations=2, structure=np.ones((3, 3)))
        metric = SegmentationMetrics(spacing=0.25)
        assert metric.update(pred, gt)[0]["hd95"] == pytest.approx(0.5)
        assert metric.update(pred, gt, spacing=2.0)[0]["hd95"] == pytest.approx(4.0)


class TestEvaluateModules:
    def test_load_offline_and_match_functions(self, monkeypatch):
        import evaluate

        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        gt = [blobs((24, 24), 5), blobs((24, 24), 6)]
        pred = [blobs((24, 24), 7), gt[1]]
        expected = {
            "dice": [compute_dice(p, g) for p, g in zip(pred, gt)],
            "iou": [compute_iou(p, g) for p, g in zip(pred, gt)],
            "hd95": [compute_hd95(p, g, spacing=(1.0, 2.0)) for p, g in zip(pred, gt)],
        }
        for name, values in expected.items():
            module = evaluate.load(evaluate_module_path(name))
            kwargs = {"spacing": (1.0, 2.0)} if name == "hd95" else {}
            out = module.compute(
                predictions=[p.astype(int) for p in pred], references=[g.astype(int) for g in gt], **kwargs
            )
            np.testing.assert_allclose(out[f"per_case_{name}"], values, rtol=1e-6)
            assert out[name] == pytest.approx(np.mean(values))

    def test_label_maps_in_3d(self):
        import evaluate

        gt = np.zeros((4, 10, 10), dtype=int)
        gt[1:3, 2:6, 2:6] = 1
        gt[0:2, 6:9, 6:9] = 2
        pred = gt.copy()
        pred[pred == 2] = 0  # class 2 missed entirely
        module = evaluate.load(evaluate_module_path("dice"))
        out = module.compute(predictions=[pred], references=[gt], labels=[1, 2])
        assert out["per_class_dice"] == [1.0, 0.0]
        hd = evaluate.load(evaluate_module_path("hd95")).compute(
            predictions=[pred], references=[gt], labels=[1, 2], spacing=(3.0, 1.0, 1.0)
        )
        assert hd["per_class_hd95"] == [0.0, math.inf]
