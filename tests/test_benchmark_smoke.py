"""Smoke run of the real-data benchmark in --quick mode (ISIC, 4 train / 2 validation images, 2 steps, 1 seed)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, shared_data_or_skip


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.real_weights
def test_real_data_benchmark_quick_mode_writes_its_tables(tmp_path):
    shared_data_or_skip()
    from peft_medsa.backbones.lite_medsam import find_lite_medsam_checkpoint

    try:
        find_lite_medsam_checkpoint()
    except FileNotFoundError as error:
        pytest.skip(f"LiteMedSAM weights absent: {error}")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "real_data.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = (tmp_path / "results.md").read_text()
    for method in ("LiteMedSAM zero-shot", "Med-SA adapters", "decoder-only fine-tuning", "full fine-tuning"):
        row = next(line for line in table.splitlines() if line.startswith(f"| isic | {method} |"))
        dice_cells = re.findall(r"(\d+\.\d) ± (\d+\.\d)", row)
        assert len(dice_cells) == 4 and all(0.0 <= float(mean) <= 100.0 for mean, _ in dice_cells)
    assert (tmp_path / "summary.csv").exists()
