"""``peft-medsa`` end to end on a tiny SamModel saved to a temp folder: outputs equal the predictor's, bad input
gives exit status 2 with one line naming the argument or file, and nothing is written on failure."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from peft_medsa.cli import main
from peft_medsa.inference.predictor import MedSAPredictor
from peft_medsa.inference.volume_io import load_volume
from peft_medsa.inference.volume_predictor import VolumePredictor
from peft_medsa.inference.volume_prompts import box3d_prompts

from conftest import shared_data_or_skip, tiny_sam


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sam")
    tiny_sam().save_pretrained(folder)
    return folder


@pytest.fixture
def image_png(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "scan.png")
    return image, tmp_path / "scan.png"


def run(capsys, *argv):
    code = main([*map(str, argv), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_point_and_box_equal_predictor(model_dir, image_png, tmp_path, capsys):
    image, path = image_png
    predictor = MedSAPredictor(tiny_sam())
    predictor.set_image(image)
    for prompt_args, kwargs in [
        (["--point", "10,20", "--point", "60,40,0"], dict(point_coords=[[10, 20], [60, 40]], point_labels=[1, 0])),
        (["--box", "5,6,40,45"], dict(box=[5, 6, 40, 45])),
    ]:
        out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
        code, stdout, _ = run(
            capsys, "predict", "--model", model_dir, "--image", path, *prompt_args, "--out", out, "--overlay", overlay
        )
        assert code == 0 and "wrote" in stdout
        expected = predictor.predict(**kwargs)[0][0]
        np.testing.assert_array_equal(np.asarray(Image.open(out)), expected.astype(np.uint8) * 255)
        drawn = np.asarray(Image.open(overlay))
        assert drawn.shape == (50, 70, 3) and not np.array_equal(drawn, image)


def test_predict_everything_writes_label_map(model_dir, image_png, tmp_path, capsys):
    _, path = image_png
    code, stdout, _ = run(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--image",
        path,
        "--everything",
        "--points-per-side",
        "4",
        "--pred-iou-thresh",
        "0",
        "--stability-thresh",
        "0",
        "--out",
        tmp_path / "labels.png",
    )
    assert code == 0
    labels = np.asarray(Image.open(tmp_path / "labels.png"))
    count = int(stdout.split("(")[1].split()[0])
    assert labels.shape == (50, 70) and count >= 1 and labels.max() <= count


def test_predict_volume_keeps_geometry(model_dir, tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = [10, -20, 30]
    data = np.random.default_rng(1).normal(0, 100, (40, 36, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "ct.nii.gz"))
    out = tmp_path / "seg.nii.gz"
    code, _, _ = run(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--image",
        tmp_path / "ct.nii.gz",
        "--box",
        "3,4,1,30,25,2",
        "--out",
        out,
        "--label",
        3,
        "--overlay",
        tmp_path / "ov.png",
    )
    assert code == 0
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, affine)
    loaded = load_volume(tmp_path / "ct.nii.gz")
    predictor = VolumePredictor(tiny_sam())
    predictor.set_volume(loaded)
    expected = predictor.predict(box3d_prompts([3, 4, 1, 30, 25, 2], loaded.array.shape))
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.transpose(expected, (2, 1, 0)) * 3)
    for z in (1, 2):  # each boxed slice as the image predictor predicts it
        image_predictor = MedSAPredictor(tiny_sam())
        image_predictor.set_image(predictor.slices[z])
        np.testing.assert_array_equal(expected[z], image_predictor.predict(box=[3, 4, 30, 25])[0][0])


def test_predict_volume_with_sd_trans_runs_one_volume_pass(model_dir, tmp_path, capsys, monkeypatch):
    """With an SD-Trans adapter, every boxed slice is embedded with its neighbours (num_slices), in one pass: no
    slice-by-slice 2D pass first, and no pass skipped because a 2D pass came out empty."""
    nib = pytest.importorskip("nibabel")
    import torch
    from peft import get_peft_model

    from peft_medsa import SDTransConfig
    from peft_medsa.inference import slice_embeddings

    torch.manual_seed(0)
    get_peft_model(tiny_sam(), SDTransConfig(r=4, init_weights=False)).save_pretrained(tmp_path / "sdtrans")
    data = np.random.default_rng(1).normal(0, 100, (40, 36, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "mr.nii.gz"))
    contexts = []
    original = slice_embeddings.num_slices_context

    def recording(model, batch_size, num_slices):
        contexts.append((batch_size, num_slices))
        return original(model, batch_size, num_slices)

    monkeypatch.setattr(slice_embeddings, "num_slices_context", recording)
    encoder_batches = []
    real_sam_embeddings = type(tiny_sam()).get_image_embeddings

    def counting(self, pixel_values, *args, **kwargs):
        encoder_batches.append(len(pixel_values))
        return real_sam_embeddings(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(type(tiny_sam()), "get_image_embeddings", counting)
    out = tmp_path / "seg.nii.gz"
    code, _, err = run(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--adapter",
        tmp_path / "sdtrans",
        "--image",
        tmp_path / "mr.nii.gz",
        "--box",
        "3,4,0,30,25,4",
        "--out",
        out,
    )
    assert code == 0, err
    assert contexts == [(5, 5)] and encoder_batches == [5]  # one chunk of all 5 slices, SD-Trans context on
    from peft import PeftModel

    model = PeftModel.from_pretrained(tiny_sam(), tmp_path / "sdtrans")
    predictor = VolumePredictor(model)
    predictor.set_volume(load_volume(tmp_path / "mr.nii.gz"))
    expected = predictor.predict(box3d_prompts([3, 4, 0, 30, 25, 4], (5, 36, 40)))
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), np.transpose(expected, (2, 1, 0)))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--point", "5,5,9"], r"--point: .*ct.nii.gz: prompts on slice\(s\) \[9\], but the volume has slices 0..3"),
        (["--point", "50,5,1"], r"--point: .*ct.nii.gz: click\(s\) \[\[50.0, 5.0\]\] on slice 1 outside the slice"),
        (["--box", "3,4,1,30,25,7"], r"--box: .*ct.nii.gz.*outside the volume.*0 <= z <= 3"),
        (["--box", "3,4,1,30,45,2"], r"--box: .*ct.nii.gz.*outside the volume.*0 <= y <= 36"),
    ],
)
def test_bad_volume_prompts_name_the_file_and_write_nothing(model_dir, tmp_path, capsys, args, message):
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.zeros((40, 36, 4), np.float32), np.eye(4)), str(tmp_path / "ct.nii.gz"))
    code, _, err = run(
        capsys,
        "predict",
        "--model",
        tmp_path / "no-model",
        "--image",
        tmp_path / "ct.nii.gz",
        *args,
        "--out",
        tmp_path / "seg.nii.gz",
        "--overlay",
        tmp_path / "o.png",
    )
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert pytest.importorskip("re").search(message, err), err  # checked before the (missing) model is loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--point", "70,20"], r"point_coords \[\(70.0, 20.0\)\] outside the image: expected .*0 <= x < 70"),
        (["--box", "40,5,10,30"], r"box .* has x1 < x0 .*expected XYXY"),
        (["--point", "1;2"], r"--point '1;2': expected numbers X,Y"),
        ([], "no prompt: give --point"),
    ],
)
def test_bad_prompts_exit_2_and_write_nothing(model_dir, image_png, tmp_path, capsys, args, message):
    _, path = image_png
    code, _, err = run(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--image",
        path,
        *args,
        "--out",
        tmp_path / "m.png",
        "--overlay",
        tmp_path / "o.png",
    )
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert pytest.importorskip("re").search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.png"]


def test_bad_files_and_adapters(model_dir, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    code, _, err = run(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--image",
        tmp_path / "notes.png",
        "--point",
        "1,1",
        "--out",
        tmp_path / "m.png",
    )
    assert code == 2 and "notes.png: cannot decode as an image" in err

    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3, 2), np.float32), np.eye(4)), str(tmp_path / "dwi.nii.gz"))
    code, _, err = run(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--image",
        tmp_path / "dwi.nii.gz",
        "--point",
        "1,1,0",
        "--out",
        tmp_path / "m.nii.gz",
    )
    assert code == 2 and "dwi.nii.gz: 4D NIfTI" in err

    from peft import get_peft_model

    from peft_medsa import MedSAConfig

    other = get_peft_model(tiny_sam(hidden_size=48, num_attention_heads=2), MedSAConfig(r=4))
    other.save_pretrained(tmp_path / "wide")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "black.png")
    code, _, err = run(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--adapter",
        tmp_path / "wide",
        "--image",
        tmp_path / "black.png",
        "--point",
        "1,1",
        "--out",
        tmp_path / "m.png",
    )
    assert code == 2 and f"--adapter {tmp_path / 'wide'}: cannot load" in err and "does not fit this model" in err

    code, _, err = run(
        capsys,
        "predict",
        "--model",
        tmp_path / "nothing",
        "--image",
        tmp_path / "black.png",
        "--point",
        "1,1",
        "--out",
        tmp_path / "m.png",
    )
    assert code == 2 and "--model" in err and "expected a local SamModel" in err
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "m.nii.gz").exists()


def test_dicom_folder_mixing_series(model_dir, tmp_path, capsys):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    (tmp_path / "dcm").mkdir()
    for i, uid in enumerate(["1.2.3", "1.2.4"]):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.ImagePositionPatient = uid, [0, 0, float(i)]
        ds.save_as(tmp_path / "dcm" / f"{i}.dcm")
    code, _, err = run(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--image",
        tmp_path / "dcm",
        "--point",
        "5,5,0",
        "--out",
        tmp_path / "m.nii.gz",
    )
    assert code == 2 and "dcm: files of 2 series" in err and not (tmp_path / "m.nii.gz").exists()


def test_help_explains_coordinates(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0
    assert "X = column" in capsys.readouterr().out


def test_predict_box_fit_makes_the_mask_span_the_box(model_dir, image_png, tmp_path, capsys):
    from peft_medsa.box_fit import ellipse_to_box, stretch_to_box

    image, path = image_png
    box = [5, 6, 40, 45]
    predictor = MedSAPredictor(tiny_sam())
    predictor.set_image(image)
    raw = predictor.predict(box=box)[0][0]
    assert raw.sum() >= 6 and not np.array_equal(raw, stretch_to_box(raw, box))  # a mask that the fit changes
    for fit, expected in (("stretch", stretch_to_box(raw, box)), ("ellipse", ellipse_to_box(raw, box))):
        out = tmp_path / f"mask-{fit}.png"
        code, _, _ = run(capsys, "predict", "--model", model_dir, "--image", path, "--box", ",".join(map(str, box)),
                         "--box-fit", fit, "--out", out)
        assert code == 0
        np.testing.assert_array_equal(np.asarray(Image.open(out)), expected.astype(np.uint8) * 255)
    code, _, err = run(capsys, "predict", "--model", model_dir, "--image", path, "--point", "10,10",
                       "--box-fit", "stretch", "--out", tmp_path / "p.png")
    assert code == 2 and "--box-fit stretch" in err and "give --box" in err
    (tmp_path / "scan.NII.GZ").write_bytes(b"")
    code, _, err = run(capsys, "predict", "--model", model_dir, "--image", tmp_path / "scan.NII.GZ", "--box",
                       "1,1,5,5,0,2", "--box-fit", "stretch", "--out", tmp_path / "m.nii.gz")
    assert code == 2 and "applies to 2D images" in err


def test_evaluate_box_fit_needs_the_tight_box(model_dir, tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", "--model", model_dir, "--dataset", "folder", "--data-dir", tmp_path,
                       "--prompt", "bbox0.75", "--box-fit", "stretch", "--out", tmp_path / "r.csv")
    assert code == 2 and "--prompt bbox0.75 gives no tight box" in err


def test_evaluate_on_a_folder_dataset(model_dir, tmp_path, capsys):
    rng = np.random.default_rng(2)
    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"data/images/c{i}.png")
        mask = np.zeros((40, 48), np.uint8)
        mask[8 + i : 30, 10:35] = 255
        Image.fromarray(mask).save(tmp_path / f"data/masks/c{i}.png")
    out = tmp_path / "res" / "results.csv"
    code, stdout, _ = run(
        capsys,
        "evaluate",
        "--model",
        model_dir,
        "--dataset",
        "folder",
        "--data-dir",
        tmp_path / "data",
        "--split",
        "train",
        "--prompt",
        "bbox",
        "--repeats",
        2,
        "--out",
        out,
        "--cache-dir",
        tmp_path / "cache",
    )
    assert code == 0, stdout
    import csv

    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and sorted({r["repeat"] for r in rows}) == ["0", "1"]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    # a tight box is deterministic: both repeats score the same
    assert {r["case_id"]: r["dice"] for r in rows if r["repeat"] == "0"} == {
        r["case_id"]: r["dice"] for r in rows if r["repeat"] == "1"
    }
    assert (out.parent / "results_summary.csv").is_file() and "| average |" in stdout
    everything_args = ["--split", "train", "--prompt", "everything", "--points-per-side", 3]
    code, stdout, _ = run(
        capsys,
        "evaluate",
        "--model",
        model_dir,
        "--dataset",
        "folder",
        "--data-dir",
        tmp_path / "data",
        *everything_args,
        "--out",
        tmp_path / "e.csv",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert code == 0, stdout
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    assert len(rows) == 2 and {r["repeat"] for r in rows} == {"0"}  # deterministic grid: one repeat
    code, _, err = run(
        capsys,
        "evaluate",
        "--model",
        model_dir,
        "--dataset",
        "nope",
        "--data-dir",
        tmp_path,
        "--out",
        tmp_path / "x.csv",
    )
    assert code == 2 and "--dataset nope" in err and not (tmp_path / "x.csv").exists()


@pytest.mark.real_data
def test_predict_on_a_real_ultrasound_image(model_dir, tmp_path, capsys):
    images = sorted((shared_data_or_skip() / "ddti_thyroid" / "images").glob("*.png"))
    if not images:
        pytest.skip("ddti_thyroid/images is empty")
    width, height = Image.open(images[0]).size
    code, _, _ = run(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--image",
        images[0],
        "--point",
        f"{width // 2},{height // 2}",
        "--out",
        tmp_path / "m.png",
        "--overlay",
        tmp_path / "o.png",
    )
    assert code == 0
    predictor = MedSAPredictor(tiny_sam())
    predictor.set_image(images[0])
    expected = predictor.predict(point_coords=[[width // 2, height // 2]])[0][0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png")) > 0, expected)


def test_debug_keeps_the_cause_of_a_user_error(model_dir, tmp_path, capsys):
    """Without --debug one line; with --debug the UserError is raised with the reader's error as its cause."""
    from peft_medsa.inference.commands import UserError

    args = [
        "predict",
        "--model",
        model_dir,
        "--image",
        tmp_path / "none.png",
        "--point",
        "1,x",
        "--out",
        tmp_path / "m.png",
    ]
    (tmp_path / "none.png").write_bytes(b"")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "none.png")
    assert main([*map(str, args), "--quiet"]) == 2
    with pytest.raises(UserError, match="--point '1,x'") as caught:
        main([*map(str, args), "--quiet", "--debug"])
    assert isinstance(caught.value.__cause__, ValueError)


def test_predict_mask_shape_ellipse_writes_the_fitted_ellipse(model_dir, image_png, tmp_path, capsys):
    from peft_medsa.mask_shape import fit_ellipse

    image, path = image_png
    predictor = MedSAPredictor(tiny_sam())
    predictor.set_image(image)
    raw = predictor.predict(box=[5, 6, 40, 45])[0][0]
    assert raw.sum() >= 6 and not np.array_equal(raw, fit_ellipse(raw))  # a mask that the fit changes
    for shape, expected in (("none", raw), ("ellipse", fit_ellipse(raw))):
        out = tmp_path / f"mask-{shape}.png"
        code, _, _ = run(capsys, "predict", "--model", model_dir, "--image", path, "--box", "5,6,40,45",
                         "--mask-shape", shape, "--out", out)
        assert code == 0
        np.testing.assert_array_equal(np.asarray(Image.open(out)), expected.astype(np.uint8) * 255)
