"""The equal-time and equal-steps verdicts of `benchmarks/learning_curves.py`, on made-up curves with known answers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from learning_curves import SETTINGS, verdict, write_outputs  # noqa: E402


def _rows(method: str, step: int, seconds: float, dice: float, seeds=(0, 1)) -> list[dict]:
    return [
        {
            "set": "isic",
            "method": method,
            "seed": seed,
            "step": step,
            "setting": setting,
            "dice": dice + seed,
            "train_seconds": seconds,
            "trainable": 1,
        }
        for seed in seeds
        for setting in SETTINGS
    ]


def test_medsa_is_taken_at_its_last_checkpoint_within_the_other_methods_time():
    # LoRA's last checkpoint took 190 s: Med-SA's 50-step checkpoint (200 s) had more time, so the 25-step one counts
    rows = _rows("medsa", 25, 100.0, 80.0) + _rows("medsa", 50, 200.0, 95.0) + _rows("lora", 50, 190.0, 85.0)
    text = verdict(rows, "lora")
    line = next(row for row in text.splitlines() if row.startswith("| isic |"))
    assert line.startswith("| isic | 25 (100) | 50 (190) |")
    assert "80.5 ± 0.5 vs 85.5 ± 0.5" in line  # mean ± std over the two seeds
    assert "wins 0 of 4 cells against lora" in text


def test_write_outputs_has_a_verdict_per_method_present(tmp_path):
    rows = _rows("zero-shot", 0, 0.0, 10.0, seeds=(0,)) + _rows("medsa", 25, 100.0, 90.0)
    rows += _rows("full", 25, 300.0, 70.0) + _rows("lora", 25, 95.0, 92.0)
    write_outputs(rows, tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "wins 4 of 4 cells against full" in text
    # no Med-SA checkpoint fits in LoRA's 95 s: the first one stands in (and the table shows its longer time)
    assert "| isic | 25 (100) | 25 (95) |" in text
    assert "wins 0 of 4 cells against lora" in text
    assert "against decoder" not in text
    assert (tmp_path / "isic.png").stat().st_size > 0


def test_equal_steps_verdict_takes_both_at_their_largest_common_step():
    rows = _rows("medsa", 25, 100.0, 80.0) + _rows("medsa", 100, 400.0, 95.0) + _rows("decoder", 100, 120.0, 90.0)
    rows += _rows("decoder", 330, 300.0, 99.0, seeds=(0,))  # beyond Med-SA's last checkpoint: not compared by steps
    by_time = verdict(rows, "decoder")
    assert "| isic | 25 (100) | 330 (300) |" in by_time
    assert "wins 0 of 4 cells against decoder" in by_time
    by_steps = verdict(rows, "decoder", at="steps")
    assert "| isic | 100 (400) | 100 (120) |" in by_steps
    assert "**95.5 ± 0.5** vs 90.5 ± 0.5" in by_steps  # won: bold
    assert "the same number of steps wins 4 of 4 cells against decoder" in by_steps


def test_equal_steps_verdict_leaves_out_sets_without_a_common_step():
    rows = _rows("medsa", 25, 100.0, 80.0) + _rows("lora", 50, 300.0, 85.0)
    text = verdict(rows, "lora", at="steps")
    assert "| isic |" not in text
    assert "wins 0 of 0 cells" in text
    with pytest.raises(ValueError, match="'time' or 'steps'"):
        verdict(rows, "lora", at="wall")
