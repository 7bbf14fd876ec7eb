"""Changed recipes in `benchmarks/learning_curves.py`: the --override parser and the comparison with the default."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from learning_curves import (  # noqa: E402
    CURRENT,
    CURRENT_DEFAULT,
    SETTINGS,
    compare_recipes,
    parse_args,
    parse_overrides,
    recipe_parent,
    row_label,
    summary,
    write_outputs,
)


def _rows(method: str, step: int, dice: float, seeds=(0, 1, 2)) -> list[dict]:
    return [
        {
            "set": "ddti",
            "method": method,
            "seed": seed,
            "step": step,
            "setting": setting,
            "dice": dice + (setting == "bbox") * 5.0 + seed,
            "train_seconds": 3.0 * step,
            "trainable": 1,
        }
        for seed in seeds
        for setting in SETTINGS
    ]


def test_overrides_are_parsed_as_python_literals_of_training_config_fields():
    assert parse_overrides(["box_iou_max=1.0", "initial_clicks=1", "lr_scheduler=linear"]) == {
        "box_iou_max": 1.0,
        "initial_clicks": 1,
        "lr_scheduler": "linear",
    }


@pytest.mark.parametrize("item", ["max_steps=300", "seed=3", "no_such_field=1", "box_iou_max"])
def test_overrides_that_the_script_sets_itself_or_that_are_not_fields_are_refused(item):
    with pytest.raises(SystemExit, match="expected KEY=VALUE with KEY a TrainingConfig field"):
        parse_overrides([item])


def test_an_override_without_a_tag_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--override", "box_iou_max=1.0"])
    assert "--override and --adapter need --tag" in capsys.readouterr().err


def test_adapter_changes_are_parsed_as_medsa_config_fields_and_change_only_those_fields():
    import dataclasses

    from peft_medsa import MedSAConfig

    args = parse_args(["--adapter", "r=32", "encoder_layers=[7, 8, 9]", "--tag", "medsa-r32"])
    assert args.adapter_overrides == {"r": 32, "encoder_layers": [7, 8, 9]}
    recipe = MedSAConfig(r=16, encoder_layers=[8, 9], prompt_conditioning="hyper")
    changed = dataclasses.replace(recipe, **parse_overrides(["r=32"], config="adapter"))  # as build() changes it
    assert (changed.r, changed.encoder_layers, changed.prompt_conditioning) == (32, [8, 9], "hyper")
    with pytest.raises(SystemExit, match="KEY a MedSAConfig field"):
        parse_overrides(["learning_rate=0.1"], config="adapter")
    with pytest.raises(SystemExit):
        parse_args(["--adapter", "r=32"])  # no --tag


def test_a_changed_recipe_is_compared_at_its_last_checkpoint_with_the_defaults_last():
    rows = (
        _rows("medsa", 100, 70.0)
        + _rows("medsa", 200, 80.0)
        + _rows("medsa-v", 100, 75.0)
        + _rows("medsa-v", 300, 79.0)
    )
    text = compare_recipes(rows, "medsa-v")
    line = next(row for row in text.splitlines() if row.startswith("| ddti |"))
    assert line.startswith("| ddti | 300 (900) | 200 (600) |")
    assert "80.0 ± 0.8 vs 81.0 ± 0.8" in line  # seeds add 0, 1, 2: mean +1, population std 0.8
    assert "medsa-v is at or above medsa in 0 of 5 cells" in text
    rows += _rows("medsa-v", 400, 81.0)
    assert "in 5 of 5 cells" in compare_recipes(rows, "medsa-v")


def test_a_changed_recipe_is_compared_on_the_training_seeds_both_recipes_have():
    rows = _rows("medsa", 200, 80.0) + _rows("medsa-v", 200, 80.0, seeds=(0, 1, 2, 3, 4))
    text = compare_recipes(rows, "medsa-v")
    line = next(row for row in text.splitlines() if row.startswith("| ddti |"))
    assert "**81.0 ± 0.8** vs 81.0 ± 0.8" in line  # seeds 3 and 4 (+3, +4) would make the variant's mean 82.0
    assert "in 5 of 5 cells (bold; paired training seeds [0, 1, 2])" in text
    slow = [{**r, "train_seconds": 9000.0} if r["seed"] >= 3 else r for r in rows]  # unpaired seeds' time
    line = next(row for row in compare_recipes(slow, "medsa-v").splitlines() if row.startswith("| ddti |"))
    assert line.startswith("| ddti | 200 (600) | 200 (600) |")
    assert "| ddti |" not in compare_recipes(_rows("medsa", 200, 80.0) + _rows("medsa-v", 200, 80.0, seeds=(5,)),
                                             "medsa-v")


def test_the_summary_lists_a_tagged_recipe_after_the_known_methods():
    text = summary(_rows("medsa-v", 300, 79.0) + _rows("medsa", 200, 80.0) + _rows("zero-shot", 0, 10.0, seeds=(0,)))
    methods = [line.split("|")[2].strip() for line in text.splitlines()[2:]]
    assert methods == ["zero-shot", "medsa", "medsa-v"]


def test_a_recipe_changed_from_a_changed_recipe_is_compared_with_that_recipe():
    labels = {"zero-shot", "medsa", "medsa-1click", "medsa-1click-lr2e-3", "medsa-300-tightbox"}
    assert recipe_parent("medsa-1click-lr2e-3", labels) == "medsa-1click"
    assert recipe_parent("medsa-1click", labels) == "medsa"
    assert recipe_parent("medsa-300-tightbox", labels) == "medsa"
    assert recipe_parent("medsa-1click-lr2e-3", {"medsa", "medsa-1click-lr2e-3"}) == "medsa"


def test_the_merged_summary_compares_each_changed_recipe_with_its_parent(tmp_path):
    rows = [
        {**row, "dice": row["dice"] + offset}
        for method, offset in (("medsa", 0.0), ("medsa-1click", 2.0), ("medsa-1click-lr2e-3", 1.0))
        for row in _rows(method, 200, 80.0)
    ]
    write_outputs(rows, tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "medsa-1click is at or above medsa in 5 of 5 cells" in text
    assert "medsa-1click-lr2e-3 is at or above medsa-1click in 0 of 5 cells" in text
    assert "medsa-1click-lr2e-3 is at or above medsa in" not in text


def test_new_runs_are_labelled_with_the_prompts_they_were_trained_with():
    """Every method is built with the current recipe's prompts, so its rows never join the earlier-prompt curves."""
    from peft_medsa.training.recipes import LITE_MEDSAM

    # the suffix names the recipe's prompts: one start click and mirroring (a changed recipe needs a new suffix)
    assert (LITE_MEDSAM.training["initial_clicks"], LITE_MEDSAM.training["hflip_probability"]) == (1, 0.5)
    assert CURRENT == "-1click-hflip"
    assert row_label("medsa") == CURRENT_DEFAULT == "medsa-1click-hflip"
    assert [row_label(m) for m in ("full", "decoder", "lora")] == [
        "full-1click-hflip", "decoder-1click-hflip", "lora-1click-hflip"]
    assert row_label("medsa", "medsa-1click-hflip-r32") == "medsa-1click-hflip-r32"
    assert row_label("full", "medsa-x") == "full-1click-hflip"  # --tag labels only the changed Med-SA recipe
