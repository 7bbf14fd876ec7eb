"""Volumes on disk: NIfTI and DICOM geometry kept on the way out, bad volumes refused with the file named."""

from __future__ import annotations

import numpy as np
import pytest

from peft_medsa.inference.volume_io import load_volume, save_label_volume, volume_to_uint8

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


def dicom_series(folder, z_positions=(-75.7, -73.2, -70.7), series_uids=None, orientations=None):
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
        if orientations is not None:
            ds.ImageOrientationPatient = orientations[i]
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


def test_dicom_mixed_orientations_and_missing_slices_refused(tmp_path):
    axial, tilted = [1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0.9848, -0.1736]
    dicom_series(tmp_path / "tilted", orientations=[tilted, axial, axial])
    with pytest.raises(ValueError, match=r"tilted/slice_2.dcm: ImageOrientationPatient .*expected one orientation"):
        load_volume(tmp_path / "tilted")
    dicom_series(tmp_path / "gap", z_positions=(-75.7, -73.2, -70.7, -63.2))  # -68.2 and -65.7 are missing
    with pytest.raises(ValueError, match=r"gap: 7.50 mm between slices .*slices are missing"):
        load_volume(tmp_path / "gap")


def test_volume_to_uint8_windows_ct():
    ct = np.array([[[-1000.0, 40.0, 240.0, 1000.0]]])
    np.testing.assert_array_equal(volume_to_uint8(ct, window=(40, 400)), [[[0, 128, 255, 255]]])
