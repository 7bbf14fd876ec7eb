"""The app's actions without a browser, on a tiny random SamModel saved to a temp folder: prompts, undo, candidates,
the embedding cache, adapters, volumes, exports, and bad input that leaves the earlier prompts and masks intact."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from peft_medsa.app import ZERO_SHOT, AppController, load_segmenter
from peft_medsa.app.backend import UserError
from peft_medsa.app.controller import MODES
from peft_medsa.app.export import export_mask, export_prompts
from peft_medsa.cli import main

from conftest import tiny_sam

POSITIVE, NEGATIVE, BOX = MODES


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sam")
    tiny_sam().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory):
    """Two Med-SA adapters with random (non-zero) weights, so that each changes the masks."""
    import torch
    from peft import get_peft_model

    from peft_medsa import MedSAConfig

    folders = []
    for seed in (1, 2):
        model = get_peft_model(tiny_sam(), MedSAConfig(r=4))
        torch.manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.normal_(0, 0.5)
        folder = tmp_path_factory.mktemp(f"adapter{seed}")
        model.save_pretrained(folder)
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def controller(model_dir, adapter_dirs):
    return AppController(load_segmenter(str(model_dir), [f"liver={adapter_dirs[0]}", f"spleen={adapter_dirs[1]}"]))


@pytest.fixture
def image_png(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "scan.png")
    return image, tmp_path / "scan.png"


def test_clicks_undo_clear_and_single_click_candidates(controller, image_png):
    state = controller.new_state()
    assert state.adapter == "liver"  # the first adapter by default
    controller.open(state, image_png[1])
    controller.click(state, 30, 20, POSITIVE)
    names, chosen = controller.candidate_labels(state)
    assert len(names) == 4 and chosen.startswith("single-mask output") and "predicted IoU" in names[1]
    assert state.session.masks[0].shape == (50, 70)
    controller.choose(state, 2)
    assert np.array_equal(state.session.masks[0], state.session.candidates[0][0][2])

    controller.click(state, 5, 40, NEGATIVE)
    assert controller.candidate_labels(state)[0] == [controller.candidate_labels(state)[1]]  # two clicks: one mask
    controller.click(state, 10, 10, BOX)
    assert state.session.on(0).box is None and state.session.on(0).pending_corner == (10, 10)
    controller.click(state, 60, 45, BOX)
    assert state.session.on(0).box == (10, 10, 60, 45)
    assert state.session.on(0).labels == [1, 0]
    assert controller.render(state).shape == (50, 70, 3)

    controller.undo(state)  # the second corner
    controller.undo(state)  # the first corner
    controller.undo(state)  # the negative click
    assert state.session.on(0).points == [(30.0, 20.0)] and state.session.on(0).box is None
    assert len(controller.candidate_labels(state)[0]) == 4
    controller.clear(state)
    assert 0 not in state.session.masks and controller.candidate_labels(state) == ([], None)
    controller.undo(state)
    assert state.session.on(0).points == [(30.0, 20.0)] and 0 in state.session.masks


def test_embedding_cached_per_image_and_adapter_and_switch_keeps_prompts(controller, image_png):
    segmenter = controller.segmenter
    state = controller.new_state()
    controller.open(state, image_png[1])
    before = segmenter.embed_count
    controller.click(state, 30, 20, POSITIVE)
    controller.click(state, 40, 25, POSITIVE)
    assert segmenter.embed_count == before + 1  # embedded once, then decoder only
    liver = state.session.masks[0].copy()
    controller.set_adapter(state, ZERO_SHOT)
    zero_shot = state.session.masks[0].copy()
    controller.set_adapter(state, "spleen")
    assert segmenter.embed_count == before + 3
    assert state.session.on(0).points == [(30.0, 20.0), (40.0, 25.0)]  # prompts kept across switches
    controller.set_adapter(state, "liver")
    assert segmenter.embed_count == before + 3  # back to a cached embedding
    assert np.array_equal(state.session.masks[0], liver) and not np.array_equal(liver, zero_shot)


def test_bad_input_keeps_prompts_and_masks(controller, model_dir, image_png, tmp_path):
    state = controller.new_state()
    controller.open(state, image_png[1])
    controller.click(state, 30, 20, POSITIVE)
    mask = state.session.masks[0].copy()
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08 corrupt")
    (tmp_path / "fake.png").write_text("not a png")
    for path, message in [
        (tmp_path / "notes.txt", "unsupported file"),
        (tmp_path / "broken.nii.gz", "broken.nii.gz: cannot open"),
        (tmp_path / "fake.png", "fake.png: cannot open"),
    ]:
        with pytest.raises(UserError, match=message):
            controller.open(state, path)
    with pytest.raises(UserError, match="outside the image"):
        controller.click(state, 70, 10, POSITIVE)
    with pytest.raises(UserError, match="cannot load"):
        controller.add_adapter(state, f"kidney={tmp_path / 'missing'}")

    from peft import get_peft_model

    from peft_medsa import MedSAConfig

    wide = get_peft_model(tiny_sam(hidden_size=48), MedSAConfig(r=4))  # another model's adapter
    wide.save_pretrained(tmp_path / "wide")
    with pytest.raises(UserError, match="cannot load"):
        controller.add_adapter(state, f"wide={tmp_path / 'wide'}")
    assert controller.segmenter.adapters == [ZERO_SHOT, "liver", "spleen"]
    assert state.document.name == "scan.png" and state.session.on(0).points == [(30.0, 20.0)]
    assert np.array_equal(state.session.masks[0], mask)
    controller.set_adapter(state, "liver")  # recomputed: the failed loads left the model as it was
    assert np.array_equal(state.session.masks[0], mask)
    controller.click(state, 35, 20, POSITIVE)  # still serving, same adapter
    assert state.adapter == "liver" and len(state.session.on(0).points) == 2


def test_adapter_loaded_from_the_page(model_dir, adapter_dirs, image_png):
    controller = AppController(load_segmenter(str(model_dir), []))
    state = controller.new_state()
    assert state.adapter == ZERO_SHOT and controller.segmenter.adapters == [ZERO_SHOT]
    controller.open(state, image_png[1])
    controller.click(state, 30, 20, POSITIVE)
    zero_shot = state.session.masks[0].copy()
    message = controller.add_adapter(state, f"liver={adapter_dirs[0]}")
    assert "loaded adapter 'liver'" in message and state.adapter == "liver"
    assert not np.array_equal(state.session.masks[0], zero_shot)


def test_prompts_json_replays_with_predict(controller, model_dir, adapter_dirs, image_png, tmp_path, capsys):
    state = controller.new_state()
    controller.open(state, image_png[1])
    controller.click(state, 30, 20, POSITIVE)
    controller.click(state, 5, 40, NEGATIVE)
    controller.click(state, 10, 8, BOX)
    controller.click(state, 60, 45, BOX)
    mask_path, prompts_path = export_mask(state, tmp_path / "app"), export_prompts(state, tmp_path / "app")
    exported = np.asarray(Image.open(mask_path))
    assert exported.shape == (50, 70) and set(np.unique(exported)) <= {0, 255}
    record = json.loads(prompts_path.read_text())
    assert record["points"] == [[30.0, 20.0, 1], [5.0, 40.0, 0]] and record["box"] == [10.0, 8.0, 60.0, 45.0]
    code = main(["predict", "--model", str(model_dir), "--adapter", str(adapter_dirs[0]), "--image",
                 str(image_png[1]), "--prompts", str(prompts_path), "--out", str(tmp_path / "cli.png"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cli.png")), exported)


def _ct_series_zip(tmp_path, depth: int = 3):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    with zipfile.ZipFile(tmp_path / "series.zip", "w") as archive:
        for z in range(depth):
            ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            ds.ImagePositionPatient = [0.0, 0.0, 2.0 * z]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.save_as(tmp_path / f"{z}.dcm")
            archive.write(tmp_path / f"{z}.dcm", f"series/slice{z}.dcm")
    return tmp_path / "series.zip"


def test_volumes_slices_windows_and_nifti_export(controller, tmp_path):
    nib = pytest.importorskip("nibabel")
    data = np.random.default_rng(0).normal(0, 100, (40, 30, 5)).astype(np.float32)  # (W, H, D) in the file
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10, 5, 30]
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "ct.nii.gz"))
    state = controller.new_state()
    assert "volume 5x30x40" in controller.open(state, tmp_path / "ct.nii.gz")
    assert state.z == 2 and state.document.needs_window
    controller.set_slice(state, 1)
    controller.click(state, 20, 15, POSITIVE)
    controller.set_window(state, "CT bone (400 / 1800)")
    assert 1 in state.session.masks and state.session.on(1).points == [(20.0, 15.0)]
    with pytest.raises(UserError, match="outside the volume"):
        controller.set_slice(state, 5)
    state.session.masks[1][:] = False
    state.session.masks[1][3:6, 4:9] = True  # a known mask to find again in the file
    out = export_mask(state, tmp_path / "out")
    saved = nib.load(str(out))
    assert np.allclose(saved.affine, affine) and saved.shape == (40, 30, 5)
    labels = np.asarray(saved.dataobj)
    assert labels[4:9, 3:6, 1].all() and labels.sum() == 15
    record = json.loads(export_prompts(state, tmp_path / "out").read_text())
    assert record["points"] == [[20.0, 15.0, 1, 1]]

    state = controller.new_state()
    assert "volume 3x128x128" in controller.open(state, _ct_series_zip(tmp_path))
    controller.click(state, 64, 64, POSITIVE)
    assert state.session.masks[1].shape == (128, 128)


def test_single_dicom_file_is_an_image_with_windows(controller, tmp_path):
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    state = controller.new_state()
    assert "image 128 x 128 px" in controller.open(state, get_testdata_file("CT_small.dcm"), "CT_small.dcm")
    assert state.document.needs_window and not state.document.is_volume
    soft = state.document.slice_image(0, "CT soft tissue (40 / 400)")
    bone = state.document.slice_image(0, "CT bone (400 / 1800)")
    assert soft.dtype == np.uint8 and not np.array_equal(soft, bone)
    controller.click(state, 64, 64, POSITIVE)
    assert export_mask(state, tmp_path).suffix == ".png"


def test_app_command_rejects_bad_adapters_with_exit_2(model_dir, tmp_path, capsys):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    code = main(["app", "--model", str(model_dir), "--adapter", f"a={tmp_path / 'missing'}", "--port", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "adapter 'a'" in err and "cannot load" in err
    code = main(["app", "--model", str(model_dir), "--adapter", "x=a", "--adapter", "x=b"])
    assert code == 2 and "names ['x', 'x'] repeat" in capsys.readouterr().err
