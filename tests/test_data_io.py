"""Readers of `peft_medsa.data.io` on real files: values, shapes, axis conventions, errors naming the file."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from peft_medsa.data.io import (
    DataLayoutError,
    MissingFileError,
    UnreadableFileError,
    file_stem,
    read_dicom_series,
    read_image,
    read_mask,
    read_nifti,
    read_volume,
    write_nifti,
)

from data_layouts import SHARED_DATA, requires_data


@requires_data
@pytest.mark.real_data
class TestRead2D:
    def test_grey_png_becomes_rgb(self):
        path = next((SHARED_DATA / "ddti_thyroid" / "images").glob("*.png"))
        image = read_image(path)
        grey = np.asarray(Image.open(path))
        assert image.shape == (*grey.shape, 3) and image.dtype == np.uint8
        assert np.array_equal(image[..., 0], grey) and np.array_equal(image[..., 2], grey)

    def test_gif_mask_values(self):
        mask = read_mask(next((SHARED_DATA / "ddti_thyroid" / "masks").glob("*.gif")))
        assert mask.shape == (300, 300)
        assert set(np.unique(mask).tolist()) == {0, 255}

    def test_origa_label_map_png(self):
        mask = read_mask(SHARED_DATA / "origa_fundus" / "masks" / "621.png")
        assert set(np.unique(mask).tolist()) == {0, 1, 2}

    def test_rgb_jpeg_mask_is_single_channel(self):
        mask = read_mask(next((SHARED_DATA / "isic2016_512" / "masks").glob("*.jpg")))
        assert mask.shape == (512, 512)
        assert mask.min() < 20 and mask.max() > 235

    def test_tiff_and_bmp(self, tmp_path):
        rgb = read_image(SHARED_DATA / "origa_fundus" / "images" / "621.png")
        Image.fromarray(rgb).save(tmp_path / "a.tif")
        Image.fromarray(read_mask(SHARED_DATA / "origa_fundus" / "masks" / "621.png")).save(tmp_path / "m.bmp")
        assert np.array_equal(read_image(tmp_path / "a.tif"), rgb)
        assert set(np.unique(read_mask(tmp_path / "m.bmp")).tolist()) == {0, 1, 2}

    def test_truncated_image_names_the_file(self, tmp_path):
        source = next((SHARED_DATA / "isic2016_512" / "images").glob("*.jpg"))
        broken = tmp_path / "ISIC_0000003.jpg"
        broken.write_bytes(source.read_bytes()[:2000])
        with pytest.raises(UnreadableFileError, match="ISIC_0000003.jpg"):
            read_image(broken)

    def test_colour_mask_is_rejected(self, tmp_path):
        colour = tmp_path / "colour.png"
        shutil.copy(SHARED_DATA / "origa_fundus" / "images" / "621.png", colour)
        with pytest.raises(DataLayoutError, match="colour.png.*single-channel"):
            read_mask(colour)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        read_image(tmp_path / "nothing.png")
    with pytest.raises(MissingFileError):
        read_nifti(tmp_path / "nothing.nii.gz")


def test_file_stem_handles_nii_gz():
    assert file_stem("a/img0001.nii.gz") == "img0001"
    assert file_stem("ISIC_0000003_Segmentation.png") == "ISIC_0000003_Segmentation"


@requires_data
@pytest.mark.real_data
class TestNifti:
    def test_axis_order_spacing_affine(self):
        path = SHARED_DATA / "ct_volume_totalseg" / "example_ct_sm.nii.gz"
        volume = read_nifti(path)
        data = np.asanyarray(nib.load(path).dataobj)
        assert volume.array.shape == (30, 101, 122)  # (D, H, W) from (X, Y, Z) = (122, 101, 30)
        assert volume.array[7, 20, 50] == data[50, 20, 7]
        assert volume.spacing == (3.0, 3.0, 3.0)
        assert np.allclose(volume.affine, nib.load(path).affine)
        assert volume.array.min() >= -1100  # HU

    def test_2d_nifti_is_one_slice(self):
        (path,) = (SHARED_DATA / "brats2020_slices" / "000001").glob("*_seg_*")
        volume = read_nifti(path)
        assert volume.array.shape == (1, 240, 240)
        assert set(np.unique(volume.array).tolist()) <= {0.0, 1.0, 2.0, 4.0}

    def test_write_round_trip(self, tmp_path):
        source = read_nifti(SHARED_DATA / "ct_volume_totalseg" / "example_seg_btcv13.nii.gz")
        back = read_nifti(write_nifti(tmp_path / "pred.nii.gz", source.array, source.affine))
        assert np.array_equal(back.array, source.array) and np.allclose(back.affine, source.affine)

    def test_canonical_keeps_geometry(self):
        path = SHARED_DATA / "brats2021_01646" / "flair.nii.gz"
        plain, canonical = read_nifti(path), read_nifti(path, canonical=True)
        centre = np.asarray([10, 20, 30, 1.0])  # (w, h, d, 1) of the plain array
        world = plain.affine @ centre
        w, h, d, _ = np.round(np.linalg.inv(canonical.affine) @ world).astype(int)
        assert canonical.array[d, h, w] == plain.array[30, 20, 10]

    def test_truncated_nifti_names_the_file(self, tmp_path):
        source = SHARED_DATA / "brats2021_01646" / "flair.nii.gz"
        broken = tmp_path / "flair.nii.gz"
        broken.write_bytes(source.read_bytes()[:5000])
        with pytest.raises(UnreadableFileError, match=r"flair\.nii\.gz.*NIfTI"):
            read_nifti(broken)


def _dicom_series(folder, positions):
    """Write real CT_small.dcm copies at the given z positions, file names in reverse order of position."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir()
    for i, z in enumerate(positions):
        ds = source.copy()
        ds.ImagePositionPatient = [source.ImagePositionPatient[0], source.ImagePositionPatient[1], z]
        ds.InstanceNumber = i + 1
        pixels = ds.pixel_array.copy()
        pixels[0, 0] = i  # mark the slice
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"slice_{len(positions) - i:03d}.dcm")
    return source


def test_dicom_series_sorted_by_position(tmp_path):
    positions = [-70.0, -80.0, -75.0]  # shuffled; 5 mm apart
    source = _dicom_series(tmp_path / "series", positions)
    volume = read_volume(tmp_path / "series")
    assert volume.array.shape == (3, 128, 128)
    # slices come out in increasing z: -80 (written 2nd), -75 (3rd), -70 (1st)
    assert [int(volume.array[d, 0, 0] - source.RescaleIntercept) for d in range(3)] == [1, 2, 0]
    assert volume.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert volume.array[:, 5:, :].min() >= -1024  # rescaled to HU
    # RAS affine: origin at the lowest slice, x flipped from DICOM's LPS
    x, y, _ = source.ImagePositionPatient
    assert np.allclose(volume.affine @ [0, 0, 0, 1], [-x, -y, -80.0, 1])
    assert np.allclose(volume.affine @ [0, 0, 2, 1], [-x, -y, -70.0, 1])


def test_dicom_series_errors_name_the_file(tmp_path):
    _dicom_series(tmp_path / "series", [0.0, 5.0])
    (tmp_path / "series" / "notes.txt").write_text("not dicom")
    with pytest.raises(UnreadableFileError, match="notes.txt"):
        read_dicom_series(tmp_path / "series")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="empty"):
        read_dicom_series(tmp_path / "empty")
    _dicom_series(tmp_path / "dup", [0.0, 0.0])
    with pytest.raises(DataLayoutError, match="share one position"):
        read_dicom_series(tmp_path / "dup")
