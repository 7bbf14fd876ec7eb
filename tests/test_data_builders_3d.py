"""3D builders (BTCV, BraTS 2021, NIfTI folder) on real volumes arranged in the official layouts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from peft_medsa.data import BTCVBuilder, load_benchmark
from peft_medsa.data.io import read_nifti
from peft_medsa.data.labels import BRATS2021, BTCV, region_masks

from data_layouts import (
    CT_IMAGE,
    CT_LABEL,
    SHARED_DATA,
    brats_layout,
    btcv_msd_layout,
    btcv_synapse_layout,
    requires_data,
)

pytestmark = [requires_data, pytest.mark.real_data]


@pytest.fixture(scope="module")
def ct():
    return read_nifti(SHARED_DATA / CT_IMAGE), read_nifti(SHARED_DATA / CT_LABEL)


def test_btcv_synapse_slices(tmp_path, ct):
    image, label = ct
    root = btcv_synapse_layout(tmp_path / "btcv", second_depth=12)
    dataset = load_benchmark("btcv", root, split="train", cache_dir=tmp_path / "cache")
    assert dataset.num_rows == 30 + 12  # one sample per axial slice of the two cases
    assert sorted(set(dataset["case_id"])) == ["img0001", "img0002"]
    sample = next(s for s in dataset if s["case_id"] == "img0001" and s["slice_index"] == 15)
    assert sample["num_slices"] == 30 and sample["spacing"] == [3.0, 3.0]
    assert sample["image"].shape == (101, 122, 3) and sample["image"].dtype == np.uint8
    assert np.array_equal(sample["mask"], label.array[15])
    expected = np.round(np.clip((image.array[15] + 160.0) / 400.0, 0, 1) * 255)  # W400 L40
    assert np.abs(sample["image"][..., 0].astype(float) - expected).max() <= 1
    assert sample["label_names"][1:] == [BTCV.classes[i] for i in range(1, 14)]


def test_btcv_msd_json_volumes(tmp_path, ct):
    image, label = ct
    root = btcv_msd_layout(tmp_path / "btcv", second_depth=12)
    builder = BTCVBuilder(data_dir=str(root), cache_dir=str(tmp_path / "cache"), view="volume", window=None)
    builder.download_and_prepare()
    splits = {name: builder.as_dataset(name).with_format("numpy", dtype=None) for name in ("train", "validation")}
    assert splits["train"].num_rows == 1 and splits["validation"].num_rows == 1
    train, val = splits["train"][0], splits["validation"][0]
    assert train["case_id"] == "img0001" and val["case_id"] == "img0002"
    assert train["image"].shape == (30, 101, 122) and train["image"].dtype == np.float32
    assert np.array_equal(train["image"], image.array.astype(np.float32))  # window=None keeps HU
    assert train["label"].dtype == np.uint8 and np.array_equal(train["label"], label.array)
    assert set(np.unique(train["label"]).tolist()) == set(range(14)) - {5}  # no esophagus in this scan
    assert np.allclose(train["affine"], image.affine) and train["spacing"].tolist() == [3.0, 3.0, 3.0]
    assert val["image"].shape == (12, 101, 122)


def test_btcv_resized_to_paper_size(tmp_path, ct):
    image, _ = ct
    root = btcv_synapse_layout(tmp_path / "btcv", second_depth=12)
    size = (32, 32, 32)  # the paper uses 128^3; smaller here for speed, same code path
    dataset = load_benchmark("btcv", root, split="train", view="volume", volume_size=size, cache_dir=tmp_path / "c")
    sample = next(s for s in dataset if s["case_id"] == "img0001")
    assert sample["image"].shape == size and sample["label"].shape == size
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["original_shape"] == [30, 101, 122]
    assert sample["spacing"] == pytest.approx([3.0 * 30 / 32, 3.0 * 101 / 32, 3.0 * 122 / 32])
    assert np.allclose(sample["original_affine"], image.affine)
    assert set(np.unique(sample["label"]).tolist()) <= set(range(14))


def test_brats_slices_and_regions(tmp_path):
    root = brats_layout(tmp_path / "brats")
    dataset = load_benchmark("brats2021", root, split="train", cache_dir=tmp_path / "cache")
    assert dataset.num_rows == 6 and sorted(set(dataset["case_id"])) == ["BraTS2021_00001", "BraTS2021_00002"]
    sample = dataset[2]
    assert sample["modalities"] == ["flair", "t1ce", "t2"] and sample["image"].shape == (240, 240, 3)
    (seg_path,) = (SHARED_DATA / "brats2020_slices" / f"{sample['slice_index'] + 1:06d}").glob("*_seg_*")
    seg = read_nifti(seg_path).array[0]
    assert np.array_equal(sample["mask"], seg.astype(np.uint8))  # float NIfTI labels -> ids 0/2/4
    assert set(np.unique(sample["mask"]).tolist()) <= set(BRATS2021.ids)
    regions = region_masks(sample["mask"], BRATS2021)
    assert regions["WT"].sum() > regions["TC"].sum() >= regions["ET"].sum() > 0
    assert sample["label_names"][4] == "enhancing tumour"
    brain = sample["image"].max(axis=-1) > 0
    assert brain.mean() > 0.1 and (sample["image"][~brain] == 0).all()  # background stays black


def test_brats_volume_has_four_channels(tmp_path):
    root = brats_layout(tmp_path / "brats")
    dataset = load_benchmark(
        "brats2021", root, split="train", view="volume", normalization="zscore", cache_dir=tmp_path / "cache"
    )
    sample = dataset[0]
    assert sample["image"].shape == (4, 3, 240, 240) and sample["modalities"] == ["flair", "t1", "t1ce", "t2"]
    assert sample["label"].shape == (3, 240, 240) and sample["spacing"] == [1.0, 1.0, 1.0]
    brain = sample["image"][0] != 0
    assert abs(float(sample["image"][0][brain].mean())) < 1e-3  # z-scored within the brain


def test_folder_nifti_pairs(tmp_path, ct):
    _, label = ct
    root = tmp_path / "own"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    shutil.copy(SHARED_DATA / CT_IMAGE, root / "images" / "abdomen.nii.gz")
    shutil.copy(SHARED_DATA / CT_LABEL, root / "labels" / "abdomen.nii.gz")
    names = ["background", *[BTCV.classes[i] for i in range(1, 14)]]
    dataset = load_benchmark(
        "folder", root, split="train", view="volume", label_names=names, intensity="ct", cache_dir=tmp_path / "c"
    )
    sample = dataset[0]
    assert sample["case_id"] == "abdomen" and np.array_equal(sample["label"], label.array)
    assert sample["label_names"][6] == "liver" and sample["image"].max() == 1.0
    slices = load_benchmark(
        "folder", root, split="train", label_names=names, keep_empty_slices=False, cache_dir=tmp_path / "c"
    )
    assert slices.num_rows == int((label.array.reshape(30, -1).max(axis=1) > 0).sum())
