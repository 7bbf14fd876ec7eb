"""Volumes: NIfTI and DICOM geometry kept on the way out, bad volumes refused, prompts carried across slices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from peft_medsa.inference.predictor import MedSAPredictor
from peft_medsa.inference.volume_io import (
    box3d_prompts,
    load_volume,
    save_label_volume,
    segment_volume_2d,
    volume_to_uint8,
)
from peft_medsa.prompts import Prompt

from conftest import tiny_sam

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")


def oblique_affine():
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 3.0])
    affine[:3, 3] = [-100.0, 20.5, 33.0]
    return affine


def write_nifti(path, shape=(12, 10, 5), extra_dims=()):
    data = np.arange(np.prod(shape + extra_dims), dtype=np.int16).reshape(shape + extra_dims)
    image = nib.Nifti1Image(data, oblique_affine())
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(oblique_affine(), code=2)
    image.set_sform(oblique_affine(), code=4)
    nib.save(image, str(path))
    return data


def test_nifti_round_trip_keeps_affine_header_and_shape(tmp_path):
    data = write_nifti(tmp_path / "ct.nii.gz")
    loaded = load_volume(tmp_path / "ct.nii.gz")
    assert loaded.array.shape == (5, 10, 12)  # (D, H, W) from (X, Y, Z)
    labels = (loaded.array % 3).astype(np.uint8)
    out = save_label_volume(tmp_path / "seg.nii.gz", labels, loaded)
    written, original = nib.load(str(out)), nib.load(str(tmp_path / "ct.nii.gz"))
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine)
    for key in ("qform_code", "sform_code", "pixdim", "xyzt_units", "srow_x", "quatern_b"):
        np.testing.assert_allclose(written.header[key], original.header[key], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(written.dataobj), data % 3)
    assert written.get_data_dtype() == np.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "seg.nii.gz"]  # no temp file left


def test_4d_nifti_and_other_files_refused(tmp_path):
    write_nifti(tmp_path / "dwi.nii.gz", extra_dims=(3,))
    with pytest.raises(ValueError, match=r"dwi.nii.gz: 4D NIfTI of shape \(12, 10, 5, 3\); expected a 3D volume"):
        load_volume(tmp_path / "dwi.nii.gz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt: not a volume; expected a .nii"):
        load_volume(tmp_path / "notes.txt")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match="broken.nii.gz"):
        load_volume(tmp_path / "broken.nii.gz")
    with pytest.raises(FileNotFoundError, match="missing.nii"):
        load_volume(tmp_path / "missing.nii")


def dicom_series(folder, z_positions=(-75.7, -73.2, -70.7), series_uids=None):
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir()
    source = get_testdata_file("CT_small.dcm")
    for i, z in enumerate(z_positions):
        ds = pydicom.dcmread(source)
        ds.ImagePositionPatient = [-158.135803, -179.035797, z]
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        if series_uids is not None:
            ds.SeriesInstanceUID = series_uids[i]
        ds.save_as(folder / f"slice_{2 - i}.dcm")  # names in reverse order: sorting must use positions


def test_dicom_series_geometry_and_label_out(tmp_path):
    dicom_series(tmp_path / "series")
    loaded = load_volume(tmp_path / "series")
    assert loaded.array.shape == (3, 128, 128) and loaded.source == "dicom"
    np.testing.assert_allclose(loaded.volume.spacing, (2.5, 0.661468, 0.661468), rtol=1e-5)
    # LPS (x, y, z) of the first slice -> RAS (-x, -y, z); columns: +x (L) -> -R, +y (P) -> -A, +z slices
    expected = np.array(
        [
            [-0.661468, 0, 0, 158.135803],
            [0, -0.661468, 0, 179.035797],
            [0, 0, 2.5, -75.7],
            [0, 0, 0, 1],
        ]
    )
    np.testing.assert_allclose(loaded.affine, expected, atol=1e-4)
    out = save_label_volume(tmp_path / "seg.nii", np.ones((3, 128, 128), np.uint8), loaded)
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, expected, atol=1e-4)
    assert written.shape == (128, 128, 3) and int(written.header["sform_code"]) == 1
    assert not np.allclose(written.affine, np.eye(4))


def test_dicom_folder_mixing_series_refused(tmp_path):
    dicom_series(tmp_path / "mixed", series_uids=["1.2.3", "1.2.3", "1.2.4"])
    with pytest.raises(ValueError, match=r"mixed: files of 2 series .*expected one series"):
        load_volume(tmp_path / "mixed")


def test_label_shape_and_suffix_checked_and_nothing_written(tmp_path):
    write_nifti(tmp_path / "ct.nii.gz")
    loaded = load_volume(tmp_path / "ct.nii.gz")
    with pytest.raises(ValueError, match=r"labels of shape \(5, 10, 11\); expected the volume's shape \(5, 10, 12\)"):
        save_label_volume(tmp_path / "seg.nii.gz", np.zeros((5, 10, 11)), loaded)
    with pytest.raises(ValueError, match="seg.png: a label volume is written as NIfTI"):
        save_label_volume(tmp_path / "seg.png", np.zeros((5, 10, 12)), loaded)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


class ThresholdPredictor:
    """Stub 2D predictor: the bright (> 127) connected region under the click, or inside the box."""

    def set_image(self, image):
        self.image = np.asarray(image)
        self.calls = getattr(self, "calls", 0) + 1

    def predict(self, point_coords=None, point_labels=None, box=None):
        bright = self.image > 127
        regions, _ = ndimage.label(bright)
        mask = np.zeros_like(bright)
        if point_coords is not None:
            x, y = np.asarray(point_coords)[0].astype(int)
            mask = (regions == regions[y, x]) & bright
        if box is not None:
            x0, y0, x1, y1 = np.asarray(box).astype(int)
            inside = np.zeros_like(bright)
            inside[y0 : y1 + 1, x0 : x1 + 1] = True
            mask = (mask | (bright & inside)) if point_coords is not None else bright & inside
        return mask[None], np.ones(1), None


def ball_volume(depth=15, size=40, radius=6, centre=(7, 20, 22)):
    zz, yy, xx = np.mgrid[:depth, :size, :size]
    ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2
    return ball, np.where(ball, 200, 30).astype(np.uint8)


def test_click_on_one_slice_propagates_until_the_mask_vanishes():
    ball, volume = ball_volume()
    predictor = ThresholdPredictor()
    result = segment_volume_2d(predictor, volume, {7: Prompt([[22, 20]], [1])}, propagate=True)
    np.testing.assert_array_equal(result, ball)
    assert predictor.calls == ball.any((1, 2)).sum() + 2  # each ball slice plus the two empty ones that stop it
    without = segment_volume_2d(ThresholdPredictor(), volume, {7: Prompt([[22, 20]], [1])})
    np.testing.assert_array_equal(without[7], ball[7])
    assert without.sum() == ball[7].sum()


def test_box3d_prompts_cover_slices_and_check_bounds():
    ball, volume = ball_volume()
    prompts = box3d_prompts([14, 12, 3, 30, 28, 11], volume.shape)
    assert sorted(prompts) == list(range(3, 12))
    np.testing.assert_array_equal(prompts[5].box, [14, 12, 30, 28])
    expected = ball.copy()
    expected[:3] = expected[12:] = False  # the ball spans slices 1-13; the box only 3-11
    np.testing.assert_array_equal(segment_volume_2d(ThresholdPredictor(), volume, prompts), expected)
    with pytest.raises(ValueError, match="max below its min"):
        box3d_prompts([14, 12, 3, 10, 28, 11], volume.shape)
    with pytest.raises(ValueError, match=r"outside the volume.*0 <= z <= 14"):
        box3d_prompts([14, 12, 3, 30, 28, 15], volume.shape)


def test_volume_with_tiny_sam_equals_slice_predictions():
    _, volume = ball_volume(depth=4, size=48, centre=(1, 20, 22))
    predictor = MedSAPredictor(tiny_sam())
    prompts = {1: Prompt([[22, 20]], [1]), 2: Prompt(box=[10, 10, 30, 30])}
    result = segment_volume_2d(predictor, volume_to_uint8(volume), prompts)
    for z, prompt in prompts.items():
        predictor.set_image(volume_to_uint8(volume)[z])
        expected = predictor.predict(
            point_coords=prompt.points if prompt.num_points else None,
            point_labels=prompt.labels if prompt.num_points else None,
            box=prompt.box,
        )[0][0]
        np.testing.assert_array_equal(result[z], expected)
    assert not result[[0, 3]].any()
    ct = np.array([[[-1000.0, 40.0, 240.0, 1000.0]]])
    np.testing.assert_array_equal(volume_to_uint8(ct, window=(40, 400)), [[[0, 128, 255, 255]]])


def test_sd_trans_model_segments_all_boxed_slices_together():
    from peft import get_peft_model

    from peft_medsa import SDTransConfig
    from peft_medsa.inference.volume import segment_volume, uses_num_slices
    from peft_medsa.inference.volume_io import boxes_from_masks, segment_volume_sd_trans

    model = get_peft_model(tiny_sam(), SDTransConfig(r=4)).eval()
    assert uses_num_slices(model)
    _, volume = ball_volume(depth=4, size=48, centre=(1, 20, 22))
    prompts = box3d_prompts([10, 10, 1, 30, 30, 2], volume.shape)
    result = segment_volume_sd_trans(model, volume, prompts)
    boxes = np.full((4, 4), np.nan)
    boxes[1:3] = [10, 10, 30, 30]
    np.testing.assert_array_equal(result, np.asarray(segment_volume(model, volume, boxes=boxes)) > 0)
    assert not result[[0, 3]].any()
    ball, _ = ball_volume()
    assert sorted(boxes_from_masks(ball)) == list(range(1, 14))
    np.testing.assert_array_equal(boxes_from_masks(ball)[7].box, [16, 14, 28, 26])
