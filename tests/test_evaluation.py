"""Evaluation protocol: fake predictors with known scores, repeats and seeds, tables, and the SamModel adapter."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from peft_medsa.evaluation import EvaluationResult, evaluate_model, sam_predict_fn
from peft_medsa.metrics import compute_hd95
from peft_medsa.prompts import Prompt

from conftest import tiny_sam_config


def label_at_prompt(image: np.ndarray, prompt: Prompt) -> int:
    """Label under the first click, or the most common non-zero label in the box (images encode their labels)."""
    labels = (image[..., 0] if image.ndim == 3 else image).astype(np.int64)
    if prompt.num_points:
        x, y = prompt.points[0].astype(int)
        return int(labels[y, x])
    x0, y0, x1, y1 = np.round(prompt.box).astype(int)
    values = labels[y0 : y1 + 1, x0 : x1 + 1]
    return int(np.bincount(values[values > 0]).argmax())


def oracle(image: np.ndarray, prompt: Prompt) -> np.ndarray:
    """Returns the ground-truth mask of the prompted object."""
    labels = image[..., 0] if image.ndim == 3 else image
    return labels == label_at_prompt(image, prompt)


def eroding(image: np.ndarray, prompt: Prompt) -> np.ndarray:
    """Returns the ground truth eroded by one pixel (4-connectivity)."""
    return ndimage.binary_erosion(oracle(image, prompt))


def sample_2d(case_id: str, squares: dict[int, tuple[int, int, int]], shape=(48, 64)) -> dict:
    mask = np.zeros(shape, dtype=np.uint8)
    for label, (top, left, side) in squares.items():
        mask[top : top + side, left : left + side] = label
    return {"image": np.repeat(mask[..., None], 3, axis=-1), "mask": mask, "case_id": case_id, "spacing": (1.0, 1.0)}


class TestEvaluateModel:
    def test_oracle_scores_one_and_zero(self):
        samples = [sample_2d("a", {1: (5, 5, 12)}), sample_2d("b", {1: (20, 30, 9)})]
        result = evaluate_model(oracle, samples, "1pt", repeats=3, show_progress=False)
        assert len(result.records) == 2 * 3
        assert all(r["dice"] == 1.0 and r["iou"] == 1.0 and r["hd95"] == 0.0 for r in result.records)
        foreground, average = result.summary()
        assert foreground["class"] == "foreground" and average["class"] == "average"
        assert foreground["dice_mean"] == 1.0 and foreground["dice_std"] == 0.0 and foreground["n_cases"] == 2

    def test_eroded_prediction_has_known_scores(self):
        # 10 x 10 square eroded to 8 x 8: Dice 128/164, IoU 64/100; surface distances 1 except the 4 GT corners at
        # sqrt(2), which are the top 4 of 36, so the 95th percentile is sqrt(2).
        result = evaluate_model(eroding, [sample_2d("a", {1: (10, 10, 10)})], "3pt", repeats=2, show_progress=False)
        for record in result.records:
            assert record["dice"] == pytest.approx(128 / 164)
            assert record["iou"] == pytest.approx(0.64)
            assert record["hd95"] == pytest.approx(math.sqrt(2))

    def test_repeats_use_different_prompts_but_oracle_scores_equal(self):
        seen: list[list[float]] = []

        def recording_oracle(image, prompt):
            seen.append(prompt.box.tolist())
            return image[..., 0] > 0

        samples = [sample_2d("a", {1: (5, 5, 20)})]
        result = evaluate_model(recording_oracle, samples, "bbox0.5", repeats=5, seed=10, show_progress=False)
        assert [r["seed"] for r in result.records] == [10, 11, 12, 13, 14]
        assert len({tuple(b) for b in seen}) == 5
        assert {r["dice"] for r in result.records} == {1.0}
        first = list(seen)
        evaluate_model(recording_oracle, samples, "bbox0.5", repeats=5, seed=10, show_progress=False)
        assert seen[5:] == first  # deterministic given the seed

    def test_label_maps_skip_absent_classes(self):
        samples = [
            sample_2d("a", {1: (2, 2, 10), 2: (20, 30, 10)}),
            sample_2d("b", {1: (5, 40, 10)}),  # no cup
        ]
        result = evaluate_model(
            eroding, samples, "1pt", repeats=2, label_names=["background", "disc", "cup"], show_progress=False
        )
        assert sorted({(r["case_id"], r["class"]) for r in result.records}) == [
            ("a", "cup"),
            ("a", "disc"),
            ("b", "disc"),
        ]
        disc, cup, average = result.summary()
        assert (disc["class"], disc["n_cases"], cup["class"], cup["n_cases"]) == ("disc", 2, "cup", 1)
        assert average["dice_mean"] == pytest.approx((disc["dice_mean"] + cup["dice_mean"]) / 2)

    def test_summary_is_mean_and_std_over_repeats_of_case_means(self):
        def click_square(image, prompt):  # depends on the random click, so repeats differ
            pred = np.zeros(image.shape[:2], dtype=bool)
            x, y = prompt.points[0].astype(int)
            pred[max(y - 4, 0) : y + 4, max(x - 4, 0) : x + 4] = True
            return pred

        samples = [sample_2d("a", {1: (5, 5, 20)}), sample_2d("b", {1: (20, 30, 15)})]
        result = evaluate_model(click_square, samples, "1pt", repeats=4, show_progress=False)
        per_repeat = [np.mean([r["dice"] for r in result.records if r["repeat"] == k]) for k in range(4)]
        row = result.summary()[0]
        assert row["dice_mean"] == pytest.approx(np.mean(per_repeat))
        assert row["dice_std"] == pytest.approx(np.std(per_repeat))
        assert row["dice_std"] > 0

    def test_volume_prompted_per_slice_scored_in_3d_mm(self):
        label = np.zeros((6, 24, 24), dtype=np.int64)
        label[1:5, 4:16, 6:18] = 3
        sample = {"image": label.astype(np.float32), "label": label, "case_id": "vol", "spacing": (2.5, 0.8, 0.8)}
        calls = []

        def slice_eroding(image, prompt):
            calls.append(image.shape)
            return eroding(image, prompt)

        result = evaluate_model(
            slice_eroding, [sample], "bbox", repeats=1, label_names={3: "liver"}, show_progress=False
        )
        assert calls == [(24, 24)] * 4  # only the 4 slices with foreground
        expected_pred = np.stack([ndimage.binary_erosion(s == 3) for s in label])
        (record,) = result.records
        assert record["class"] == "liver"
        assert record["hd95"] == pytest.approx(compute_hd95(expected_pred, label == 3, spacing=(2.5, 0.8, 0.8)))
        assert record["dice"] == pytest.approx(2 * 4 * 100 / (4 * 144 + 4 * 100))
        oracle_result = evaluate_model(oracle, [sample], "1pt", repeats=1, show_progress=False)
        assert oracle_result.records[0]["dice"] == 1.0 and oracle_result.records[0]["hd95"] == 0.0

    def test_wrong_prediction_shape_names_the_case(self):
        with pytest.raises(ValueError, match="case 'a'.*expected \\(48, 64\\)"):
            evaluate_model(lambda i, p: np.zeros((4, 4)), [sample_2d("a", {1: (2, 2, 5)})], "1pt", show_progress=False)


class TestEvaluationResultOutputs:
    def result(self) -> EvaluationResult:
        samples = [sample_2d("a", {1: (2, 2, 10)}), sample_2d("b", {1: (5, 5, 10)})]
        return evaluate_model(eroding, samples, "bbox0.75", repeats=2, show_progress=False)

    def test_csv_round_trip(self, tmp_path):
        result = self.result()
        path = result.write_csv(tmp_path / "cases.csv")
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == ["case_id", "class", "repeat", "seed", "dice", "iou", "hd95"]
        assert len(rows) == 4 and rows[3]["case_id"] == "b" and rows[3]["seed"] == "1"
        assert float(rows[0]["dice"]) == pytest.approx(result.records[0]["dice"])
        summary_path = result.write_summary_csv(tmp_path / "summary.csv")
        with summary_path.open() as handle:
            assert [r["class"] for r in csv.DictReader(handle)] == ["foreground", "average"]

    def test_markdown_table(self):
        text = self.result().to_markdown()
        lines = text.strip().splitlines()
        assert lines[0] == "| class | n | Dice (%) | IoU (%) | HD95 |"
        assert lines[2] == "| foreground | 2 | 78.05 ± 0.00 | 64.00 ± 0.00 | 1.41 ± 0.00 |"
        assert lines[3].startswith("| average | 2 | 78.05")


def tiny_sam_model():
    from transformers import SamModel

    torch.manual_seed(0)
    return SamModel(tiny_sam_config(window_size=4)).eval()


def manual_forward(model, image: np.ndarray, prompt: Prompt) -> np.ndarray:
    """The adapter's computation written out for a 40 x 56 uint8 image (long side 56 -> 64: 46 x 64)."""
    pixels = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    pixels = F.interpolate(pixels, size=(46, 64), mode="bilinear", align_corners=False, antialias=True) / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pixels = torch.cat([(pixels - mean) / std, torch.zeros(1, 3, 18, 64)], dim=2)
    scale = torch.tensor([64 / 56, 46 / 40])
    with torch.no_grad():
        out = model(
            pixel_values=pixels,
            input_points=torch.from_numpy(prompt.points)[None, None] * scale,
            input_labels=torch.from_numpy(prompt.labels)[None, None],
            input_boxes=(torch.from_numpy(prompt.box).view(2, 2) * scale).view(1, 1, 4),
            multimask_output=False,
        )
    logits = F.interpolate(out.pred_masks[0], size=(64, 64), mode="bilinear", align_corners=False)[:, :, :46, :]
    logits = F.interpolate(logits, size=(40, 56), mode="bilinear", align_corners=False, antialias=True)
    return (logits[0, 0] > 0).numpy()


class TestSamPredictFn:
    def test_matches_manual_forward_at_original_size(self):
        model = tiny_sam_model()
        image = np.random.default_rng(0).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
        prompt = Prompt(points=[[20, 10], [40, 30]], labels=[1, 0], box=[5, 3, 45, 35])
        pred = sam_predict_fn(model)(image, prompt)
        assert pred.shape == (40, 56) and pred.dtype == bool
        expected = manual_forward(model, image, prompt)
        assert 0 < expected.sum() < expected.size  # a non-trivial mask, so the comparison means something
        np.testing.assert_array_equal(pred, expected)

    def test_peft_wrapper_grey_images_and_custom_preprocess(self):
        from peft import LoraConfig, get_peft_model

        model = tiny_sam_model()
        image = np.random.default_rng(1).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
        prompt = Prompt(points=[[20, 10]], labels=[1])
        base = sam_predict_fn(model)(image, prompt)
        wrapped = get_peft_model(tiny_sam_model(), LoraConfig(target_modules=["qkv"], r=2)).eval()
        np.testing.assert_array_equal(sam_predict_fn(wrapped)(image, prompt), base)  # LoRA starts as identity

        grey = image[..., 0]
        np.testing.assert_array_equal(
            sam_predict_fn(model)(grey, prompt), sam_predict_fn(model)(np.repeat(grey[..., None], 3, -1), prompt)
        )
        black = sam_predict_fn(model, normalization="none")(np.zeros((40, 56, 3), dtype=np.float32), prompt)
        minmax_black = sam_predict_fn(model, normalization="minmax")(np.zeros((40, 56, 3), dtype=np.uint8), prompt)
        np.testing.assert_array_equal(black, minmax_black)  # all-zero pixels either way
        with pytest.raises(ValueError, match="normalization='zscore'"):
            sam_predict_fn(model, normalization="zscore")


def test_channels_first_volume_gives_each_slice_with_its_channels():
    """The BraTS volume view is (C, D, H, W): slice z is image[:, z] as (H, W, C), not image[z] (a channel)."""
    label = np.zeros((5, 24, 28), dtype=np.int64)
    label[1:4, 4:16, 6:18] = 1
    image = np.stack([label * 100.0, label * 50.0])  # (C=2, D=5, H=24, W=28)
    seen = []

    def predict(slice_image, prompt):
        seen.append((slice_image.shape, float(slice_image[..., 0].max()), float(slice_image[..., 1].max())))
        return slice_image[..., 0] > 0

    result = evaluate_model(
        predict, [{"image": image, "label": label, "case_id": "brats"}], "bbox", repeats=1, show_progress=False
    )
    assert seen == [((24, 28, 2), 100.0, 50.0)] * 3
    assert result.records[0]["dice"] == 1.0
    with pytest.raises(ValueError, match=r"case 'odd': image of shape \(3, 4, 24, 28\) does not match"):
        evaluate_model(
            predict,
            [{"image": np.zeros((3, 4, 24, 28)), "label": label, "case_id": "odd"}],
            "bbox",
            repeats=1,
            show_progress=False,
        )
