"""``peft-medsa train`` on a folder of real DDTI images with a tiny SamModel: adapter, card with measured
validation metrics, no free-text base model, and clear errors before any training."""

from __future__ import annotations

import json

import pytest
import yaml
from peft import PeftModel
from transformers import SamModel

from peft_medsa.cli import main
from peft_medsa.training.recipes import LITE_MEDSAM, LITE_MEDSAM_PRESETS, VIT_SAM, Recipe, default_recipe

from conftest import tiny_lite_medsam_config, tiny_sam
from data_layouts import folder_layout_2d, requires_data

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sam")
    tiny_sam().save_pretrained(folder)
    return folder


def run(capsys, *argv):
    code = main([*map(str, argv), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@requires_data
def test_train_writes_adapter_with_measured_card(tmp_path, model_dir, capsys):
    data = folder_layout_2d(tmp_path / "ddti", count=5)
    out = tmp_path / "adapter"
    code, stdout, err = run(capsys, "train", "--data", data, "--out", out, "--model", model_dir, "--steps", "2",
                            "--val-fraction", "0.4", "--repeats", "1", "--rank", "4", "--cache-dir", tmp_path / "c")
    assert code == 0, err
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert (tmp_path / "adapter.run" / "metrics.jsonl").is_file()
    card = (out / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert "base_model" not in metadata  # a local folder is no Hub id
    evaluation = card.split("## Evaluation")[1].split("## Usage")[0]
    assert "Not evaluated" not in evaluation
    rows = [line for line in evaluation.splitlines() if line.startswith("| 1pt") or line.startswith("| bbox")]
    assert len(rows) == 3 and all("| foreground |" in r for r in rows)  # 1pt, bbox0.75, bbox; 3pt below
    dice = float(rows[0].split("|")[3].split("±")[0])
    assert 0.0 <= dice <= 100.0
    assert "adapter:" in stdout and str(out) in stdout
    loaded = PeftModel.from_pretrained(SamModel.from_pretrained(model_dir), out)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert any("medsa" in n or "hyp" in n for n, _ in loaded.named_parameters())


@requires_data
def test_train_refuses_bad_input_before_training(tmp_path, model_dir, capsys):
    data = folder_layout_2d(tmp_path / "ddti", count=3)
    code, _, err = run(capsys, "train", "--data", tmp_path / "missing", "--out", tmp_path / "a", "--model", model_dir)
    assert code == 2 and "--data" in err and "no such file or folder" in err
    (tmp_path / "taken").mkdir()
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "taken", "--model", model_dir)
    assert code == 2 and "exists" in err and "--overwrite" in err
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "b", "--model", model_dir,
                       "--target", "liver", "--cache-dir", tmp_path / "c")
    assert code == 2 and "'liver'" in err and "available" in err
    code, _, err = run(capsys, "train", "--data", data, "--out", data / "adapter", "--model", model_dir)
    assert code == 2 and "inside --data" in err
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.run").exists()


def test_recipes_follow_the_model_and_give_fresh_configs():
    from peft_medsa.backbones import LiteMedSamModel

    lite = default_recipe(LiteMedSamModel(tiny_lite_medsam_config()))
    assert lite.training["normalization"] == "minmax"
    assert lite.peft_config.encoder_layers == LITE_MEDSAM.peft_config.encoder_layers
    vit = default_recipe(tiny_sam(), steps=8, learning_rate=3e-4, rank=8)
    assert vit.training["max_steps"] == 8 and vit.training["learning_rate"] == 3e-4 and vit.peft_config.r == 8
    assert vit.training["warmup_steps"] <= 2 and VIT_SAM.peft_config.r == 64
    assert vit.peft_config is not VIT_SAM.peft_config
    config = vit.training_config(output_dir="x", seed=3)
    assert config.max_steps == 8 and config.seed == 3 and config.normalization == "imagenet"


def test_presets_change_the_lite_medsam_recipe_and_refuse_other_models():
    import argparse

    from peft_medsa.backbones import LiteMedSamModel
    from peft_medsa.cli import add_train_arguments

    lite = LiteMedSamModel(tiny_lite_medsam_config())
    fundus = default_recipe(lite, preset="optic-disc-cup")
    assert fundus.training["learning_rate"] == 2e-3 and fundus.training["hflip_probability"] == 0.5
    changed = ("learning_rate",)
    assert {k: v for k, v in fundus.training.items() if k not in changed} == {
        k: v for k, v in LITE_MEDSAM.training.items() if k not in changed}
    assert LITE_MEDSAM.training["learning_rate"] == 1e-3 and LITE_MEDSAM.training["hflip_probability"] == 0.5
    assert LITE_MEDSAM.training_text.endswith("; each image mirrored left-right with probability 0.5")
    assert fundus.training_text == LITE_MEDSAM.training_text  # the card names the mirroring the preset keeps
    assert "mirrored" not in Recipe(LITE_MEDSAM.peft_config, {"hflip_probability": 0.0}, "clicks").training_text
    assert default_recipe(lite, preset="optic-disc-cup", learning_rate=5e-4).training["learning_rate"] == 5e-4
    assert (fundus.peft_config.r, LITE_MEDSAM.peft_config.r) == (32, 16)  # the preset widens the adapters ...
    assert fundus.peft_config.encoder_layers == LITE_MEDSAM.peft_config.encoder_layers
    assert default_recipe(lite, preset="optic-disc-cup", rank=8).peft_config.r == 8  # ... unless --rank says
    assert default_recipe(lite).peft_config.r == 16
    with pytest.raises(ValueError, match="preset 'retina' is not known; choose one of \\['optic-disc-cup'\\]"):
        default_recipe(lite, preset="retina")
    with pytest.raises(ValueError, match="measured on LiteMedSAM only, but the model is 'sam'"):
        default_recipe(tiny_sam(), preset="optic-disc-cup")
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    flag = next(a for a in parser._actions if a.dest == "preset")
    assert sorted(flag.choices) == sorted(LITE_MEDSAM_PRESETS)  # the command line offers every preset


@requires_data
def test_train_refuses_a_preset_for_vit_sam(tmp_path, model_dir, capsys):
    data = folder_layout_2d(tmp_path / "data", count=3)
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "a", "--model", model_dir,
                       "--preset", "optic-disc-cup")
    assert code == 2 and "--preset: preset 'optic-disc-cup' was measured on LiteMedSAM only" in err
    assert not (tmp_path / "a").exists()


@requires_data
def test_train_folder_example_under_accelerate_launch(tmp_path, model_dir):
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = folder_layout_2d(tmp_path / "ddti", count=4)
    out = tmp_path / "adapter"
    script = Path(__file__).resolve().parents[1] / "examples" / "train_folder.py"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
               "--data", str(data), "--out", str(out), "--model", str(model_dir), "--steps", "1", "--rank", "2",
               "--val-fraction", "0.5", "--repeats", "1", "--quiet", "--cpu", "--cache-dir", str(tmp_path / "c")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "adapter_model.safetensors").is_file() and "## Evaluation" in (out / "README.md").read_text()
    assert "| 1pt |" in (out / "README.md").read_text() and str(out) in result.stdout


def test_train_records_masks_drawn_as_ellipses_and_says_so(tmp_path, model_dir, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (tmp_path / "fundus" / folder).mkdir(parents=True)
    yy, xx = np.mgrid[:48, :56]
    for i in range(5):
        mask = ((xx - 26 - i) / (12 + i)) ** 2 + ((yy - 22) / 9) ** 2 <= 1  # drawn ellipses
        image = rng.integers(0, 120, (48, 56, 3), dtype=np.uint8)
        image[mask] += 120
        Image.fromarray(image).save(tmp_path / "fundus" / "images" / f"case{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "fundus" / "masks" / f"case{i}.png")
    for shape, recorded in (("auto", "ellipse"), ("none", None)):
        out = tmp_path / f"adapter-{shape}"
        code, stdout, err = run(capsys, "train", "--data", tmp_path / "fundus", "--out", out, "--model", model_dir,
                                "--steps", "1", "--val-fraction", "0.4", "--repeats", "1", "--rank", "4",
                                "--mask-shape", shape, "--cache-dir", tmp_path / "c")
        assert code == 0, err
        assert json.loads((out / "adapter_config.json").read_text())["mask_shape"] == recorded
        assert ("mask shape: ellipse" in stdout) == (recorded == "ellipse")
        assert ("returns the ellipse fitted" in (out / "README.md").read_text()) == (recorded == "ellipse")
