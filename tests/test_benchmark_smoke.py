"""Smoke runs of the real-data benchmarks in --quick mode (2D sets: ISIC, 2 steps; volumes: one BraTS fold, 1 step)."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
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
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = (tmp_path / "results.md").read_text()
    for method in ("LiteMedSAM zero-shot", "Med-SA adapters", "decoder-only fine-tuning", "full fine-tuning"):
        row = next(line for line in table.splitlines() if line.startswith(f"| isic | {method} |"))
        dice_cells = re.findall(r"(\d+\.\d) ± (\d+\.\d)", row)
        assert len(dice_cells) == 4 and all(0.0 <= float(mean) <= 100.0 for mean, _ in dice_cells)
    assert (tmp_path / "summary.csv").exists()


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.real_weights
def test_real_volumes_benchmark_quick_mode_writes_table_nifti_and_montage(tmp_path):
    nib = pytest.importorskip("nibabel")
    shared_data_or_skip()
    from peft_medsa.backbones.lite_medsam import find_lite_medsam_checkpoint

    try:
        find_lite_medsam_checkpoint()
    except FileNotFoundError as error:
        pytest.skip(f"LiteMedSAM weights absent: {error}")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "real_volumes.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = (tmp_path / "results.md").read_text()
    for method in (
        "LiteMedSAM zero-shot",
        "Med-SA 2D",
        "Med-SA + SD-Trans",
        "Med-SA + SD-Trans, one adapter per target",
    ):
        for setting in ("box", "sparse-5"):
            row = next(line for line in table.splitlines() if line.startswith(f"| brats2015 | {setting} | {method} |"))
            dice = float(re.search(r"\| (\d+\.\d) ± \d+\.\d \|", row).group(1))
            assert 0.0 <= dice <= 100.0
            if setting == "box":
                assert dice > 30.0  # a box on every tumour slice: LiteMedSAM finds the tumour
    # the paired differences: SD-Trans - 2D and per target - joint, over the same 2 (case, target) pairs
    for name in ("SD-Trans - 2D", "per target - joint"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} | brats2015 | box |"))
        assert re.search(r"\| 2 \| [+-]\d+\.\d \| \[[+-]\d+\.\d, [+-]\d+\.\d\] \| [01] / 1 \|$", row), row
    per_case = (tmp_path / "per_case.csv").read_text().splitlines()
    assert "train_seed" in per_case[0].split(",")
    written = nib.load(str(tmp_path / "pred_brats2015_pat0001_1_medsa-sdtrans.nii.gz"))
    assert np.asarray(written.dataobj).any() and np.allclose(np.abs(written.affine[2, 2]), 12.0)  # 12 mm slices
    assert (tmp_path / "montage_brats2015_pat0001_1.png").stat().st_size > 0
