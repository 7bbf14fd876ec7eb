"""Preprocessing of `peft_medsa.data.transforms`: sizes, padding, inverse mappings, intensities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from peft_medsa.data.io import read_image, read_mask, read_nifti
from peft_medsa.data.transforms import (
    LITE_MEDSAM_IMAGE_SIZE,
    SAM_IMAGE_SIZE,
    boxes_to_input,
    boxes_to_original,
    compute_resize,
    medsam_normalize,
    normalize_mri,
    points_to_input,
    points_to_original,
    preprocess_medsam,
    resize_longest_and_pad,
    resize_volume,
    resized_affine,
    resized_spacing,
    restore_original_size,
    to_rgb,
    window_ct,
)

from data_layouts import SHARED_DATA, requires_data


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.parametrize(
    ("size", "target", "resized", "padding"),
    [
        ((300, 300), 1024, (1024, 1024), (0, 0)),
        ((480, 640), 1024, (768, 1024), (256, 0)),
        ((640, 427), 256, (256, 171), (0, 85)),
    ],
)
def test_compute_resize(size, target, resized, padding):
    info = compute_resize(size, target)
    assert info.resized_size == resized and info.padding == padding
    assert info.scale == pytest.approx(target / max(size))


def test_padding_is_bottom_right():
    image = np.full((60, 100, 3), 200, dtype=np.uint8)
    padded, info = resize_longest_and_pad(image, 64)
    assert padded.shape == (64, 64, 3) and padded.dtype == np.uint8
    assert info.resized_size == (38, 64) and info.padding == (26, 0)
    assert (padded[:38] == 200).all() and (padded[38:] == 0).all()


@requires_data
@pytest.mark.real_data
@pytest.mark.parametrize(
    ("mask_path", "target"),
    [
        ("isic2016_512/masks/000_ISIC_0000003_Segmentation.jpg", SAM_IMAGE_SIZE),
        ("ddti_thyroid/masks/100_1(1).gif", SAM_IMAGE_SIZE),
        ("origa_fundus/masks/621.png", LITE_MEDSAM_IMAGE_SIZE),
    ],
)
def test_mask_round_trip_on_real_masks(mask_path, target):
    raw = read_mask(SHARED_DATA / mask_path)
    label = (raw > 127).astype(np.uint8) if raw.max() > 2 else raw.astype(np.uint8)
    forward, info = resize_longest_and_pad(label, target, is_mask=True)
    assert forward.shape == (target, target)
    assert set(np.unique(forward).tolist()) == set(np.unique(label).tolist())  # nearest keeps ids
    back = restore_original_size(forward, info, mode="nearest")
    assert back.shape == label.shape and back.dtype == np.uint8
    for k in np.unique(label)[1:]:
        assert _dice(back == k, label == k) > 0.97


@requires_data
@pytest.mark.real_data
def test_logits_back_from_low_resolution():
    # a 512 ISIC mask as "logits" at the 256 x 256 low-resolution output of a 1024 model
    label = (read_mask(SHARED_DATA / "isic2016_512/masks/000_ISIC_0000003_Segmentation.jpg") > 127).astype(np.uint8)
    forward, info = resize_longest_and_pad(label.astype(np.float32) * 20 - 10, SAM_IMAGE_SIZE)
    low = torch.nn.functional.interpolate(torch.from_numpy(forward)[None, None], size=(256, 256), mode="bilinear")
    back = restore_original_size(low, info)
    assert isinstance(back, torch.Tensor) and tuple(back.shape) == (1, 1, 512, 512)
    assert _dice(back[0, 0].numpy() > 0, label) > 0.98


def test_points_and_boxes_round_trip():
    info = compute_resize((300, 451), 1024)
    points = np.array([[[0.0, 0.0], [450.0, 299.0], [120.5, 33.25]]])  # (1, 3, 2) (x, y)
    forward = points_to_input(points, info)
    assert forward[0, 1, 0] == pytest.approx(450.0 * 1024 / 451)  # x scales by w / W
    assert forward[0, 1, 1] == pytest.approx(299.0 * info.resized_size[0] / 300)  # y by h / H
    assert np.allclose(points_to_original(forward, info), points, atol=1e-9)
    boxes = torch.tensor([[10.0, 20.0, 200.0, 150.0]])  # XYXY
    box_in = boxes_to_input(boxes, info)
    assert isinstance(box_in, torch.Tensor)
    assert torch.allclose(box_in[:, :2], points_to_input(boxes[:, :2], info))
    assert torch.allclose(boxes_to_original(box_in, info), boxes, atol=1e-4)


@requires_data
@pytest.mark.real_data
def test_image_resize_and_medsam_preprocessing():
    image = read_image(SHARED_DATA / "ddti_thyroid/images/100_1(1).png")
    padded, info = preprocess_medsam(image, 256)
    assert padded.shape == (256, 256, 3) and padded.dtype == np.float32
    assert padded.min() == 0.0 and padded.max() == pytest.approx(1.0)
    grey = medsam_normalize(image[..., 0])
    assert grey.shape == (300, 300, 3) and grey.min() == 0.0 and grey.max() == pytest.approx(1.0)
    assert to_rgb(image[..., :1]).shape == (300, 300, 3)


@requires_data
@pytest.mark.real_data
def test_ct_window_and_volume_resize_geometry():
    ct = read_nifti(SHARED_DATA / "ct_volume_totalseg/example_ct_sm.nii.gz")
    unit = window_ct(ct.array)  # W400 L40: [-160, 240] HU -> [0, 1]
    assert unit.dtype == np.float32 and unit.min() == 0.0 and unit.max() == 1.0
    assert window_ct(np.array([-160.0, 40.0, 240.0])) == pytest.approx([0.0, 0.5, 1.0])
    resized = resize_volume(unit, (128, 128, 128))
    assert resized.shape == (128, 128, 128) and resized.dtype == np.float32
    label = read_nifti(SHARED_DATA / "ct_volume_totalseg/example_seg_btcv13.nii.gz").array
    small = resize_volume(label, (15, 50, 61), is_label=True)
    assert set(np.unique(small).tolist()) <= set(np.unique(label).tolist())
    back = resize_volume(small, label.shape, is_label=True)
    assert back.shape == label.shape and _dice(back == 6, label == 6) > 0.9  # liver survives the round trip
    assert resized_spacing(ct.spacing, ct.array.shape, (15, 50, 61)) == pytest.approx((6.0, 3.0 * 101 / 50, 6.0))
    # the world position of the volume's centre is unchanged by resizing
    affine = resized_affine(ct.affine, ct.array.shape, (15, 50, 61))
    old_centre = ct.affine @ [(122 - 1) / 2, (101 - 1) / 2, (30 - 1) / 2, 1]
    new_centre = affine @ [(61 - 1) / 2, (50 - 1) / 2, (15 - 1) / 2, 1]
    assert np.allclose(old_centre, new_centre)


@requires_data
@pytest.mark.real_data
def test_mri_normalisation_within_brain():
    flair = read_nifti(SHARED_DATA / "brats2021_01646/flair.nii.gz").array
    brain = flair != 0
    z = normalize_mri(flair, "zscore")
    assert abs(z[brain].mean()) < 1e-3 and z[brain].std() == pytest.approx(1.0, abs=1e-3)
    assert (z[~brain] == 0).all()
    p = normalize_mri(flair, "percentile")
    assert p.min() == 0.0 and p.max() == 1.0 and (p[~brain] == 0).all()
    with pytest.raises(ValueError, match="method"):
        normalize_mri(flair, "histogram")
