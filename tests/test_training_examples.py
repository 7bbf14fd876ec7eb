"""The example scripts, run in-process on a tiny local SamModel and a tiny fake ISIC 2017 layout."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peft_medsa.data.io import DataLayoutError
from test_training_utils import toy_samples

from conftest import REPO_ROOT, tiny_sam

EXAMPLES = REPO_ROOT / "examples"


pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def fake_isic_2017(root: Path) -> Path:
    for split, (images, masks), n in (("train", ("Training_Data", "Training_Part1_GroundTruth"), 4),
                                      ("val", ("Validation_Data", "Validation_Part1_GroundTruth"), 2)):
        (root / f"ISIC-2017_{images}").mkdir(parents=True)
        (root / f"ISIC-2017_{masks}").mkdir(parents=True)
        for i, sample in enumerate(toy_samples(n, seed=len(split))):
            name = f"ISIC_{len(split)}{i:06d}"
            Image.fromarray(sample["image"]).save(root / f"ISIC-2017_{images}" / f"{name}.jpg", quality=95)
            Image.fromarray(sample["mask"] * 255).save(root / f"ISIC-2017_{masks}" / f"{name}_segmentation.png")
    return root


def run_example(script: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, *argv])
    monkeypatch.syspath_prepend(str(EXAMPLES))
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")


def test_train_isic_example_end_to_end(tmp_path, monkeypatch, capsys):
    model_dir = tmp_path / "tiny-sam"
    tiny_sam().save_pretrained(model_dir)
    data = fake_isic_2017(tmp_path / "isic")
    out = tmp_path / "run"
    argv = ["--model", str(model_dir), "--data-dir", str(data), "--output-dir", str(out), "--max-steps", "2",
            "--rank", "4", "--save-every", "1", "--year", "2017", "--cache-dir", str(tmp_path / "cache"),
            "--no-progress"]
    run_example("train_isic.py", argv, monkeypatch)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and 0 <= summary["best_dice"] <= 1
    card = (out / "final" / "README.md").read_text()
    assert "skin lesion segmentation (ISIC, dermoscopy)" in card and "- isic" in card
    assert json.loads((out / "final" / "adapter_config.json").read_text())["r"] == 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and any("val_dice" in r for r in rows)
    # the same command again is refused, and the run is left as it was
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(FileExistsError, match="pass resume=True"):
        run_example("train_isic.py", argv, monkeypatch)
    assert sorted(p.name for p in out.rglob("*")) == before


def test_wrong_data_layout_error_passes_through(tmp_path, monkeypatch):
    wrong = tmp_path / "not-isic"
    (wrong / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(wrong / "images" / "a.jpg")
    out = tmp_path / "run"
    argv = ["--model", "unused", "--data-dir", str(wrong), "--output-dir", str(out), "--cache-dir",
            str(tmp_path / "cache")]
    with pytest.raises(DataLayoutError, match="not-isic"):
        run_example("train_isic.py", argv, monkeypatch)
    assert not out.exists()


@pytest.mark.parametrize("script", ["train_btcv.py", "train_refuge2.py", "train_brats.py", "train_tnmix.py",
                                    "train_isic.py"])
def test_examples_have_the_common_flags(script, monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        run_example(script, ["--help"], monkeypatch)
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--model", "--data-dir", "--output-dir", "--max-steps", "--resume", "--overwrite"):
        assert flag in help_text
    if script == "train_btcv.py":
        assert "--per-organ" in help_text and "--organs" in help_text


def fake_btcv(root: Path) -> Path:
    """Two 4-slice CT volumes (MSD-style imagesTr / labelsTr) with a spleen (1) and a liver (6) block."""
    from peft_medsa.data.io import write_nifti

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for case in (1, 2):
        label = np.zeros((4, 40, 48), np.uint8)
        label[:, 5:20, 6:20] = 1
        label[:, 22:36, 24:44] = 6
        ct = rng.normal(0, 20, label.shape).astype(np.float32) + np.where(label > 0, 80.0, -100.0)
        write_nifti(root / "imagesTr" / f"img{case:04d}.nii.gz", ct.astype(np.int16), np.diag([0.8, 0.8, 3.0, 1]))
        write_nifti(root / "labelsTr" / f"label{case:04d}.nii.gz", label, np.diag([0.8, 0.8, 3.0, 1]))
    return root


def test_train_btcv_per_organ(tmp_path, monkeypatch, capsys):
    model_dir = tmp_path / "tiny-sam"
    tiny_sam().save_pretrained(model_dir)
    out = tmp_path / "btcv"
    argv = ["--model", str(model_dir), "--data-dir", str(fake_btcv(tmp_path / "BTCV")), "--output-dir", str(out),
            "--max-steps", "1", "--rank", "4", "--save-every", "0", "--per-organ", "--organs", "spleen", "liver",
            "--val-fraction", "0.5", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    run_example("train_btcv.py", argv, monkeypatch)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [Path(s["output_dir"]).name for s in lines] == ["spleen", "liver"]
    for organ in ("spleen", "liver"):
        card = (out / organ / "final" / "README.md").read_text()
        assert f"structure **{organ}**" in card and "abdominal multi-organ segmentation" in card
    from peft_medsa.hub import load_organ_adapters

    model = load_organ_adapters(tiny_sam(), {o: str(out / o / "final") for o in ("spleen", "liver")})
    assert set(model.peft_config) == {"spleen", "liver"}
