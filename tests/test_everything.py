"""'Segment everything': grid, filters and box NMS on a synthetic image with a stub decoder; batched decoding.

The stub decoder stands in for SAM so that what is tested is the grid / filter / NMS logic: a click inside a drawn
shape returns three candidates (the shape with high predicted IoU and stable logits; the whole image with low
predicted IoU; the shape with unstable logits), a click on the background returns a low-IoU background mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peft_medsa.inference.everything import (
    Instance,
    batched_mask_to_box,
    best_instance,
    box_nms,
    evaluate_everything,
    label_map,
    predictor_decode_fn,
    segment_everything,
    stability_score,
)
from peft_medsa.inference.predictor import MedSAPredictor

from conftest import tiny_sam

H, W = 60, 80


def drawn_shapes() -> list[np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    return [
        (xx >= 5) & (xx < 30) & (yy >= 5) & (yy < 25),  # rectangle
        (xx - 55) ** 2 + (yy - 20) ** 2 < 12**2,  # disk
        (xx >= 10) & (xx < 70) & (yy >= 40) & (yy < 52),  # bar
    ]


SHAPES = drawn_shapes()


def stub_decode(points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = SHAPES
    logits, ious = [], []
    for x, y in points:
        hit = [s for s in shapes if s[int(y), int(x)]]
        if hit:
            shape = torch.from_numpy(hit[0])
            stable = torch.where(shape, 5.0, -5.0)
            whole = torch.full((H, W), 5.0)
            unstable = torch.where(shape, 0.5, -0.5)
            logits.append(torch.stack([stable, whole, unstable]))
            ious.append(torch.tensor([0.95, 0.5, 0.97]))
        else:
            background = torch.from_numpy(~np.any(shapes, axis=0))
            logits.append(torch.where(background, 5.0, -5.0)[None].repeat(3, 1, 1))
            ious.append(torch.tensor([0.3, 0.3, 0.3]))
    return torch.stack(logits), torch.stack(ious)


def test_finds_each_drawn_shape_once():
    instances = segment_everything(stub_decode, (H, W), points_per_side=12, points_per_batch=20)
    shapes = drawn_shapes()
    assert len(instances) == len(shapes)
    for shape in shapes:
        assert sum(np.array_equal(inst.mask, shape) for inst in instances) == 1
    for inst in instances:
        rows, cols = np.nonzero(inst.mask)
        np.testing.assert_array_equal(inst.box, [cols.min(), rows.min(), cols.max(), rows.max()])
        assert inst.area == inst.mask.sum() and inst.predicted_iou == np.float32(0.95)
        assert inst.mask[int(inst.point[1]), int(inst.point[0])]  # its click lies inside it
    labels = label_map(instances, (H, W))
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 3]
    for i, inst in enumerate(instances):
        assert (labels[inst.mask] == i + 1).all()
    assert (labels[~np.any(shapes, axis=0)] == 0).all()


def test_filters_can_be_relaxed():
    # without the stability filter, the unstable copy (higher predicted IoU) wins the NMS for each shape
    loose = segment_everything(stub_decode, (H, W), points_per_side=12, stability_score_thresh=0.0)
    assert len(loose) == 3 and all(inst.predicted_iou == np.float32(0.97) for inst in loose)
    # with a low IoU threshold the whole-image and background candidates pass too
    everything = segment_everything(stub_decode, (H, W), points_per_side=12, pred_iou_thresh=0.0, box_nms_thresh=1.0)
    assert any(inst.area == H * W for inst in everything)


def test_box_nms_stability_and_boxes_by_hand():
    boxes = torch.tensor([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [0, 0, 9, 9]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.95, 0.5, 0.9])
    # IoU([0,0,9,9],[1,1,10,10]) = 81 / 119 = 0.68
    assert box_nms(boxes, scores, 0.7).tolist() == [1, 0, 2]  # 3 duplicates 0 exactly
    assert box_nms(boxes, scores, 0.6).tolist() == [1, 2]
    assert box_nms(torch.zeros((0, 4)), torch.zeros(0), 0.5).tolist() == []
    logits = torch.tensor([[[2.0, 0.5], [-0.5, -2.0]]])
    assert stability_score(logits, 0.0, 1.0).item() == torch.tensor(1 / 3).item()  # |>1| = 1, |>-1| = 3
    masks = torch.zeros((2, 5, 6), dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    assert batched_mask_to_box(masks).tolist() == [[2, 1, 4, 2], [0, 0, 0, 0]]


def test_evaluate_everything_scores_best_instance():
    shapes = drawn_shapes()
    label = np.zeros((H, W), dtype=np.int64)
    for i, shape in enumerate(shapes):
        label[shape] = i + 1
    calls = []

    def everything(image):
        calls.append(image.shape)
        return segment_everything(stub_decode, image.shape[:2], points_per_side=12)

    samples = [{"image": np.zeros((H, W, 3), np.uint8), "mask": label, "case_id": "synthetic"}]
    result = evaluate_everything(everything, samples, label_names=["bg", "rect", "disk", "bar"], show_progress=False)
    assert len(calls) == 1  # one grid run per image, shared by its classes
    assert [r["class"] for r in result.records] == ["rect", "disk", "bar"]
    assert all(r["dice"] == 1.0 and r["iou"] == 1.0 for r in result.records)
    missing = Instance(shapes[0], np.zeros(4), 1, 1.0, 1.0, np.zeros(2))
    assert best_instance([missing], shapes[1]).sum() == shapes[0].sum()
    assert not best_instance([], shapes[1]).any()


def test_predictor_decode_fn_equals_single_predict():
    predictor = MedSAPredictor(tiny_sam())
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    predictor.set_image(image)
    points = np.array([[10.0, 12.0], [50.0, 40.0], [70.0, 5.0]])
    logits, iou = predictor_decode_fn(predictor)(points)
    assert logits.shape == (3, 3, H, W) and iou.shape == (3, 3)
    for i, point in enumerate(points):
        single, scores, _ = predictor.predict(point_coords=point[None], multimask_output=True, return_logits=True)
        scale = float(np.abs(single).max())
        np.testing.assert_allclose(logits[i].numpy(), single, rtol=1e-4, atol=1e-4 * scale)
        np.testing.assert_allclose(iou[i].numpy(), scores, rtol=1e-4, atol=1e-6)


def test_volume_everything_counts_false_positives_on_slices_without_the_class():
    """The automatic mode finds the same square on all 6 slices; the class is only on slices 2-3, so the 4 other
    slices are false positives and 3D Dice is 2 * 2 / (6 + 2) = 0.5 (slices have equal areas)."""
    square = np.zeros((H, W), dtype=bool)
    square[10:20, 12:24] = True
    label = np.zeros((6, H, W), dtype=np.int64)
    label[2:4][:, square] = 1
    calls = []

    def everything(image):
        calls.append(image.shape)
        return [Instance(square, np.array([12, 10, 23, 19]), int(square.sum()), 1.0, 1.0, np.array([15, 15]))]

    samples = [{"image": np.zeros((6, H, W), np.uint8), "label": label, "case_id": "vol", "spacing": (2.0, 1.0, 1.0)}]
    (record,) = evaluate_everything(everything, samples, show_progress=False).records
    assert len(calls) == 6  # every slice segmented, not only the two holding the class
    assert record["dice"] == pytest.approx(0.5)
    far = Instance(np.roll(square, 30, axis=1), np.zeros(4), int(square.sum()), 1.0, 1.0, np.zeros(2))
    assert not best_instance([far], square, require_overlap=True).any()  # no overlap: the oracle picks nothing
    with pytest.raises(ValueError, match="non-empty target"):
        best_instance([far], np.zeros((H, W), bool))
