"""The helpers of ``benchmarks/inference_options.py``: mirrored prompts, clicked components, left-out thresholds."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from inference_options import SETTINGS, THRESHOLDS, clicked_components, left_one_out, mirror_prompt  # noqa: E402

from peft_medsa.prompts import tight_box  # noqa: E402


def test_a_mirrored_prompt_lands_on_the_mirrored_object():
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:9, 3:11] = True
    points = np.array([[5.0, 6.0], [10.0, 4.0]])
    flipped_points, flipped_box = mirror_prompt(points, tight_box(mask), width=30)
    flipped_mask = mask[:, ::-1]
    np.testing.assert_array_equal(flipped_box, tight_box(flipped_mask))
    assert all(flipped_mask[int(y), int(x)] for x, y in flipped_points)
    back_points, back_box = mirror_prompt(flipped_points, flipped_box, width=30)
    np.testing.assert_array_equal(back_points, points)
    np.testing.assert_array_equal(back_box, tight_box(mask))


def test_clicked_components_keeps_the_clicked_region_with_holes_filled():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:8, 2:8] = True
    mask[4, 4] = False  # a hole
    mask[12:19, 12:19] = True  # a larger second region
    kept = clicked_components(mask, np.array([[3.0, 3.0]]), np.array([1]))
    expected = np.zeros_like(mask)
    expected[2:8, 2:8] = True
    np.testing.assert_array_equal(kept, expected)
    # a negative click does not choose a region: the largest one is kept
    largest = clicked_components(mask, np.array([[3.0, 3.0]]), np.array([0]))
    np.testing.assert_array_equal(largest, np.pad(np.ones((7, 7), bool), ((12, 1), (12, 1))))
    assert not clicked_components(np.zeros((5, 5), bool), None, None).any()


def test_left_one_out_applies_the_threshold_of_the_other_images():
    keys = [f"t={t:g}" for t in THRESHOLDS]
    records = []
    for case in range(4):
        for setting in SETTINGS:
            record = {"case": case, "setting": setting, **{k: 0.5 for k in keys}}
            # images 0, 1 and 3 score best at t=-1; image 2 at t=1
            record["t=-1"] = 0.2 if case == 2 else 0.9
            record["t=1"] = 0.8 if case == 2 else 0.3
            records.append(record)
    held = left_one_out(records)
    # every image gets t=-1 from the others, image 2 too (it does not choose its own threshold): 0.2 there
    assert held["1pt"] == np.mean([0.9, 0.9, 0.2, 0.9])
    assert set(held) == set(SETTINGS)
