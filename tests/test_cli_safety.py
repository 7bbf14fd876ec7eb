"""``peft-medsa`` never destroys an input and checks every value before loading the model: exit 2, one line."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import peft_medsa.inference.commands as commands
from peft_medsa.cli import main


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the model would be loaded: every check below must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(commands, "load_model", forbidden)


@pytest.fixture
def scan(tmp_path):
    path = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def volume(tmp_path):
    import nibabel as nib

    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), str(path))
    return path


def run(capsys, *argv):
    code = main([*map(str, argv), "--quiet"])
    err = capsys.readouterr().err
    return code, err


def predict(capsys, image, *extra):
    return run(capsys, "predict", "--model", "unused", "--image", image, "--point", "5,5", *extra)


def test_output_equal_to_input_image_is_refused_and_input_kept(capsys, scan, no_model):
    before = scan.read_bytes()
    for extra in (["--out", scan], ["--out", scan.with_name("m.png"), "--overlay", scan]):
        code, err = predict(capsys, scan, *extra)
        assert code == 2 and err.count("\n") == 1 and "would be overwritten" in err and str(scan) in err
    assert scan.read_bytes() == before


def test_output_reaching_the_input_through_a_symlink_or_hard_link_is_refused(capsys, scan, tmp_path, no_model):
    before = scan.read_bytes()
    (tmp_path / "link.png").symlink_to(scan)
    os.link(scan, tmp_path / "hard.png")
    for alias in ("link.png", "hard.png"):
        code, err = predict(capsys, scan, "--out", tmp_path / alias)
        assert code == 2 and "would be overwritten" in err
    assert scan.read_bytes() == before


def test_volume_output_equal_to_input_volume_is_refused(capsys, volume, no_model):
    before = volume.read_bytes()
    code, err = run(capsys, "predict", "--model", "m", "--image", volume, "--box", "1,1,0,5,5,2", "--out", volume)
    assert code == 2 and "would be overwritten" in err and volume.read_bytes() == before


def test_overlay_equal_to_out_is_refused(capsys, scan, tmp_path, no_model):
    code, err = predict(capsys, scan, "--out", tmp_path / "m.png", "--overlay", tmp_path / "m.png")
    assert code == 2 and "--out and --overlay are the same file" in err
    assert not (tmp_path / "m.png").exists()


def test_output_inside_an_input_dicom_folder_is_refused(capsys, tmp_path, no_model):
    series = tmp_path / "series"
    series.mkdir()
    code, err = run(capsys, "predict", "--model", "m", "--image", series, "--box", "1,1,0,5,5,2",
                    "--out", series / "seg.nii.gz")
    assert code == 2 and "inside the input folder" in err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--out", "{tmp}"], "is a folder"),
        (["--out", "{tmp}/m.png", "--device", "cuda"], "CUDA is not available"),
        (["--out", "{tmp}/m.png", "--device", "gpu7"], "not a torch device"),
        (["--out", "{tmp}/m.png", "--pred-iou-thresh", "nan"], "--pred-iou-thresh nan: expected a number in [0, 1]"),
        (["--out", "{tmp}/m.png", "--stability-thresh", "inf"], "--stability-thresh inf"),
        (["--out", "{tmp}/m.png", "--points-per-side", "0"], "--points-per-side 0"),
    ],
)
def test_bad_2d_values_exit_2_before_the_model_loads(capsys, scan, tmp_path, no_model, extra, words):
    if "cuda" in extra:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    code, err = predict(capsys, scan, *[e.format(tmp=tmp_path) for e in extra])
    assert code == 2 and err.count("\n") == 1 and words in err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--label", "256"], "--label 256: expected an integer in 1..255"),
        (["--label", "0"], "--label 0"),
        (["--window", "40,-400"], "WIDTH must be > 0"),
        (["--window", "40,nan"], "--window '40,nan'"),
    ],
)
def test_bad_volume_values_exit_2_before_the_model_loads(capsys, volume, tmp_path, no_model, extra, words):
    code, err = run(capsys, "predict", "--model", "m", "--image", volume, "--box", "1,1,0,5,5,2",
                    "--out", tmp_path / "seg.nii.gz", *extra)
    assert code == 2 and err.count("\n") == 1 and words in err
    assert not (tmp_path / "seg.nii.gz").exists()


def test_evaluate_out_that_is_a_folder_exits_2_before_loading(capsys, tmp_path, no_model):
    (tmp_path / "r.csv").mkdir()
    code, err = run(capsys, "evaluate", "--model", "m", "--dataset", "folder", "--data-dir", tmp_path,
                    "--out", tmp_path / "r.csv")
    assert code == 2 and "is a folder" in err
