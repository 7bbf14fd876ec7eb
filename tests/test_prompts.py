"""Prompt simulation: clicks, boxes with a target IoU, corrective clicks, grids, per-slice prompts, SAM inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peft_medsa.prompts import (
    SETTINGS,
    Prompt,
    add_corrective_click,
    box_iou,
    collate_prompts,
    grid_points,
    jitter_box,
    make_prompt,
    negative_points,
    next_click,
    positive_points,
    slice_prompts,
    tight_box,
)


def rect(shape, y0, x0, y1, x1):
    """Mask with rows y0..y1-1 and columns x0..x1-1 set."""
    mask = np.zeros(shape, dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def at(mask, points):
    """Mask values at (x, y) points."""
    xy = np.asarray(points).astype(int)
    return mask[xy[:, 1], xy[:, 0]]


class TestPrompt:
    def test_sam_inputs_shapes_and_values(self):
        prompt = Prompt(points=[[3, 5], [7, 1]], labels=[1, 0], box=[1, 2, 9, 8])
        inputs = prompt.to_sam_inputs()
        assert inputs["input_points"].shape == (1, 1, 2, 2) and inputs["input_points"].dtype == torch.float32
        assert inputs["input_labels"].tolist() == [[[1, 0]]] and inputs["input_labels"].dtype == torch.int64
        assert inputs["input_boxes"].tolist() == [[[1.0, 2.0, 9.0, 8.0]]]
        assert inputs["input_points"][0, 0, 0].tolist() == [3.0, 5.0]  # (x, y) order kept

    def test_collate_pads_with_ignored_label_and_omits_missing_parts(self):
        inputs = collate_prompts([Prompt([[1, 1]], [1]), Prompt([[2, 2], [3, 3], [4, 4]], [1, 0, 1])])
        assert inputs["input_points"].shape == (2, 1, 3, 2)
        assert inputs["input_labels"][0, 0].tolist() == [1, -10, -10]
        assert "input_boxes" not in inputs
        box_only = collate_prompts([Prompt(box=[0, 0, 4, 4])])
        assert set(box_only) == {"input_boxes"} and box_only["input_boxes"].shape == (1, 1, 4)

    def test_invalid_prompts_raise(self):
        with pytest.raises(ValueError, match="2 points but 1 labels"):
            Prompt([[0, 0], [1, 1]], [1])
        with pytest.raises(ValueError, match="x0 <= x1"):
            Prompt(box=[5, 0, 1, 4])
        with pytest.raises(ValueError, match="all prompts in a batch have a box or none"):
            collate_prompts([Prompt([[0, 0]], [1]), Prompt(box=[0, 0, 1, 1])])
        with pytest.raises(ValueError, match="at least one click or a box"):
            Prompt().to_sam_inputs()

    def test_scale_maps_points_and_box(self):
        prompt = Prompt([[10, 20]], [1], box=[2, 4, 6, 8]).scale(0.5, 2.0)
        assert prompt.points.tolist() == [[5.0, 40.0]]
        assert prompt.box.tolist() == [1.0, 8.0, 3.0, 16.0]


class TestClicks:
    def test_positive_points_inside_interior_and_seeded(self):
        mask = rect((40, 50), 5, 10, 25, 40)
        points = positive_points(mask, 50, rng=0)
        assert points.shape == (50, 2)
        assert at(mask, points).all()
        depth_ok = (points[:, 0] >= 11) & (points[:, 0] <= 38) & (points[:, 1] >= 6) & (points[:, 1] <= 23)
        assert depth_ok.all()  # one-pixel outer ring avoided
        assert len({tuple(p) for p in points.tolist()}) == 50  # without replacement
        np.testing.assert_array_equal(points, positive_points(mask, 50, rng=np.random.default_rng(0)))
        assert not np.array_equal(points, positive_points(mask, 50, rng=1))

    def test_positive_points_on_thin_and_tiny_masks(self):
        line = rect((20, 20), 10, 2, 11, 18)  # one pixel high: no interior, falls back to the line itself
        assert at(line, positive_points(line, 3, rng=0)).all()
        dot = rect((20, 20), 4, 4, 5, 5)
        assert positive_points(dot, 3, rng=0).tolist() == [[4.0, 4.0]] * 3

    def test_negative_points_outside_and_near(self):
        mask = rect((60, 60), 20, 20, 40, 40)
        points = negative_points(mask, 30, rng=0, max_distance=3)
        assert not at(mask, points).any()
        xs, ys = points[:, 0], points[:, 1]
        assert ((xs >= 17) & (xs <= 42) & (ys >= 17) & (ys <= 42)).all()
        with pytest.raises(ValueError, match="background"):
            negative_points(np.ones((4, 4)), 1, rng=0)


class TestBoxes:
    def test_tight_box_is_inclusive_xyxy(self):
        assert tight_box(rect((30, 40), 5, 7, 12, 20)).tolist() == [7.0, 5.0, 19.0, 11.0]

    def test_box_iou_known_values(self):
        assert box_iou([0, 0, 9, 9], [0, 0, 9, 9]) == 1.0
        assert box_iou([0, 0, 9, 9], [5, 0, 14, 9]) == pytest.approx(50 / 150)
        assert box_iou([0, 0, 0, 0], [0, 0, 1, 1]) == pytest.approx(0.25)

    @pytest.mark.parametrize("target", [0.5, 0.75])
    def test_jitter_hits_target_iou_inside_image(self, target):
        mask = rect((64, 80), 0, 50, 20, 80)  # touches the top and right image edges
        ref = tight_box(mask)
        boxes = [jitter_box(ref, target, rng=seed, image_shape=mask.shape) for seed in range(20)]
        for box in boxes:
            assert box_iou(ref, box) == pytest.approx(target, abs=0.02)
            assert box[0] >= 0 and box[1] >= 0 and box[2] <= 79 and box[3] <= 63
            assert box[0] <= box[2] and box[1] <= box[3]
        assert len({tuple(b.tolist()) for b in boxes}) == 20  # random jitter, not one fixed box
        np.testing.assert_array_equal(boxes[3], jitter_box(ref, target, rng=3, image_shape=mask.shape))

    def test_jitter_on_a_tiny_object(self):
        ref = tight_box(rect((16, 16), 7, 7, 9, 9))
        for seed in range(5):
            assert box_iou(ref, jitter_box(ref, 0.75, rng=seed, image_shape=(16, 16))) == pytest.approx(0.75, abs=0.02)

    def test_jitter_rejects_bad_target(self):
        with pytest.raises(ValueError, match="target_iou"):
            jitter_box([0, 0, 4, 4], 0.0, rng=0, image_shape=(8, 8))


class TestMakePrompt:
    def test_named_settings(self):
        mask = rect((64, 64), 10, 20, 40, 50)
        one = make_prompt(mask, "1pt", rng=0)
        three = make_prompt(mask, "3pt", rng=0)
        assert one.num_points == 1 and one.box is None and one.labels.tolist() == [1]
        assert three.num_points == 3 and at(mask, three.points).all()
        assert make_prompt(mask, "bbox", rng=0).box.tolist() == [20.0, 10.0, 49.0, 39.0]
        for setting, target in (("bbox0.5", 0.5), ("bbox0.75", 0.75)):
            prompt = make_prompt(mask, setting, rng=1)
            assert prompt.num_points == 0
            assert box_iou(prompt.box, tight_box(mask)) == pytest.approx(target, abs=0.02)
        assert set(SETTINGS) == {"1pt", "3pt", "bbox0.5", "bbox0.75", "bbox"}

    def test_errors_name_the_case_and_setting(self):
        with pytest.raises(ValueError, match=r"'1pt'.*case 'img_007'"):
            make_prompt(np.zeros((8, 8)), "1pt", rng=0, case_id="img_007")
        with pytest.raises(ValueError, match="unknown prompt setting 'everything'.*grid_points"):
            make_prompt(np.ones((8, 8)), "everything", rng=0)


class TestCorrectiveClicks:
    def test_positive_click_at_centre_of_largest_false_negative(self):
        gt = np.zeros((40, 40), dtype=np.uint8)
        gt[5:16, 5:16] = 1  # 11 x 11 missed square, centre (10, 10)
        gt[30:33, 30:33] = 1  # small missed square
        pred = np.zeros_like(gt)
        pred[30:33, 30:33] = 1
        pred[0:2, 30:38] = 1  # false positive of 16 pixels < 121
        point, label = next_click(pred, gt)
        assert label == 1 and point.tolist() == [10.0, 10.0]

    def test_negative_click_in_largest_false_positive(self):
        gt = rect((40, 40), 5, 5, 10, 10)
        pred = gt.copy()
        pred[20:29, 20:29] = 1  # 9 x 9 false positive, centre (24, 24)
        point, label = next_click(pred, gt)
        assert label == 0 and point.tolist() == [24.0, 24.0]
        prompt = add_corrective_click(Prompt([[7, 7]], [1]), pred, gt)
        assert prompt.labels.tolist() == [1, 0] and prompt.points[1].tolist() == [24.0, 24.0]

    def test_perfect_prediction_gives_no_click(self):
        gt = rect((10, 10), 2, 2, 6, 6)
        assert next_click(gt, gt) is None
        prompt = Prompt([[3, 3]], [1])
        assert add_corrective_click(prompt, gt, gt) is prompt


def test_grid_points_match_sam_layout():
    points = grid_points(2, (100, 200))
    assert points.tolist() == [[50.0, 25.0], [150.0, 25.0], [50.0, 75.0], [150.0, 75.0]]
    assert grid_points(32, (1024, 1024)).shape == (1024, 2)
    assert grid_points(32, (1024, 1024))[0].tolist() == [16.0, 16.0]


class TestSlicePrompts:
    def test_flags_empty_slices_and_prompts_each_foreground_slice(self):
        volume = np.zeros((5, 20, 20), dtype=np.int64)
        volume[1, 2:8, 2:8] = 2
        volume[3, 10:18, 5:9] = 2
        volume[3, 0:2, 0:2] = 1
        result = slice_prompts(volume, "bbox", rng=0, label=2)
        assert result.has_foreground.tolist() == [False, True, False, True, False]
        assert result.slice_indices.tolist() == [1, 3]
        assert [p is None for p in result.prompts] == [True, False, True, False, True]
        assert result.prompts[3].box.tolist() == [5.0, 10.0, 8.0, 17.0]  # label 1 ignored
        points = slice_prompts(volume, "3pt", rng=0, label=2)
        assert (at(volume[1], points.prompts[1].points) == 2).all()

    def test_volume_without_label_raises(self):
        with pytest.raises(ValueError, match="case 'vol1' has no voxels of label 4"):
            slice_prompts(np.zeros((2, 4, 4)), "1pt", rng=0, label=4, case_id="vol1")
