"""Bad input: clear errors naming the file and what was expected; ``on_bad_case="skip"`` skips and reports."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from peft_medsa.data import load_benchmark
from peft_medsa.data.builders import ISICBuilder
from peft_medsa.data.io import DataLayoutError, MissingFileError, UnreadableFileError

from data_layouts import (
    brats_flair_only_case,
    brats_layout,
    btcv_msd_layout,
    btcv_synapse_layout,
    folder_layout_2d,
    isic_layout,
    requires_data,
    tnmix_layout,
)

pytestmark = [requires_data, pytest.mark.real_data]

ISIC_2018_IMAGES = "ISIC2018_Task1-2_Training_Input"
ISIC_2018_MASKS = "ISIC2018_Task1_Training_GroundTruth"


@pytest.fixture
def isic(tmp_path):
    return isic_layout(tmp_path / "isic", "2018", per_split=3)


def test_missing_mask_raises_naming_the_image(isic, tmp_path):
    mask = sorted((isic / ISIC_2018_MASKS).glob("*.png"))[1]
    mask.unlink()
    image_name = mask.name.replace("_segmentation.png", ".jpg")
    with pytest.raises(FileNotFoundError, match=rf"{image_name}: image without a mask.*{ISIC_2018_MASKS}"):
        load_benchmark("isic2018", isic, cache_dir=tmp_path / "cache")


def test_skip_reports_every_bad_case(isic, tmp_path):
    masks = sorted((isic / ISIC_2018_MASKS).glob("*.png"))
    masks[0].unlink()  # image without mask
    shutil.copy(masks[1], isic / ISIC_2018_MASKS / "ISIC_9999999_segmentation.png")  # mask without image
    builder = ISICBuilder(
        data_dir=str(isic), cache_dir=str(tmp_path / "cache"), config_name="2018", on_bad_case="skip"
    )
    with pytest.warns(UserWarning, match=r"'train': skipped 2 of 4 cases") as record:
        builder.download_and_prepare()
    assert builder.as_dataset("train").num_rows == 2
    assert [(split, case) for split, case, _ in builder.bad_cases] == [
        ("train", masks[0].name.replace("_segmentation.png", "")),
        ("train", "ISIC_9999999"),
    ]
    messages = [str(w.message) for w in record]
    assert any("ISIC_9999999_segmentation.png: mask without an image" in m for m in messages)


def test_size_mismatch_names_mask_and_sizes(tmp_path):
    root = folder_layout_2d(tmp_path / "own", count=2)
    mask = sorted((root / "masks").glob("*.gif"))[0]
    Image.open(mask).convert("L").resize((150, 120), Image.NEAREST).save(mask)
    with pytest.raises(DataLayoutError, match=rf"{re.escape(mask.name)}.*150x120.*expected the size.*300x300"):
        load_benchmark("folder", root, cache_dir=tmp_path / "cache")


def test_truncated_image_raises_or_is_skipped(isic, tmp_path):
    image = sorted((isic / ISIC_2018_IMAGES).glob("*.jpg"))[0]
    image.write_bytes(image.read_bytes()[:3000])
    with pytest.raises(UnreadableFileError, match=rf"{image.name}: cannot decode"):
        load_benchmark("isic", isic, cache_dir=tmp_path / "c1")
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        train = load_benchmark("isic", isic, split="train", on_bad_case="skip", cache_dir=tmp_path / "c2")
    assert train.num_rows == 2 and image.stem not in train["case_id"]


def test_mask_values_outside_labels(tmp_path):
    root = btcv_synapse_layout(tmp_path / "btcv", second_depth=4)
    label_path = root / "RawData" / "Training" / "label" / "label0002.nii.gz"
    label = nib.load(label_path)
    data = np.asanyarray(label.dataobj).copy()
    data[0, 0, 0] = 20
    nib.save(nib.Nifti1Image(data, label.affine), label_path)
    with pytest.raises(DataLayoutError, match=r"label0002.nii.gz: mask values \{20\} outside the declared labels"):
        load_benchmark("btcv", root, cache_dir=tmp_path / "c1")
    with pytest.warns(UserWarning, match="skipped 1 of 2 cases.*img0002"):
        train = load_benchmark("btcv", root, split="train", on_bad_case="skip", cache_dir=tmp_path / "c2")
    assert set(train["case_id"]) == {"img0001"}


def test_binary_mask_with_other_values(tmp_path):
    root = folder_layout_2d(tmp_path / "own", count=2)
    mask = sorted((root / "masks").glob("*.gif"))[0]
    values = np.asarray(Image.open(mask).convert("L")).copy()
    values[0, :3] = 7
    Image.fromarray(values).save(mask)
    with pytest.raises(DataLayoutError, match=rf"{re.escape(mask.name)}: mask values \{{7\}}.*mask_threshold"):
        load_benchmark("folder", root, cache_dir=tmp_path / "c1")
    dataset = load_benchmark("folder", root, split="train", mask_threshold=127, cache_dir=tmp_path / "c2")
    assert dataset.num_rows == 2


def test_empty_folder_and_wrong_layouts(tmp_path):
    root = tmp_path / "isic"
    (root / ISIC_2018_IMAGES).mkdir(parents=True)
    (root / ISIC_2018_MASKS).mkdir()
    with pytest.raises(DataLayoutError, match=rf"{ISIC_2018_IMAGES}: no ISIC_NNNNNNN.jpg images found"):
        load_benchmark("isic", root, cache_dir=tmp_path / "c")
    with pytest.raises(DataLayoutError, match="no ISIC 2016 split with masks.*ISBI2016_ISIC_Part1_Training_Data"):
        load_benchmark("isic2016", root, cache_dir=tmp_path / "c")
    with pytest.raises(DataLayoutError, match=r"no BTCV layout found; expected RawData/Training"):
        load_benchmark("btcv", root, cache_dir=tmp_path / "c")
    with pytest.raises(DataLayoutError, match="no REFUGE2 split folder"):
        load_benchmark("refuge2", root, cache_dir=tmp_path / "c")
    with pytest.raises(DataLayoutError, match="no BraTS case folder"):
        load_benchmark("brats2021", root, cache_dir=tmp_path / "c")
    with pytest.raises(DataLayoutError, match="no folder for source 'tnscui'"):
        load_benchmark("tnmix", root, cache_dir=tmp_path / "c")
    with pytest.raises(MissingFileError, match="missing data folder"):
        load_benchmark("btcv", tmp_path / "nowhere", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="on_bad_case"):
        load_benchmark("btcv", root, on_bad_case="ignore", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="2D benchmark"):
        load_benchmark("isic", root, view="volume", cache_dir=tmp_path / "c")


def test_brats_missing_modalities(tmp_path):
    root = brats_layout(tmp_path / "brats")
    brats_flair_only_case(root)
    with pytest.raises(FileNotFoundError, match=r"BraTS2021_01646: missing BraTS2021_01646_t1.nii.gz, .*t2.nii.gz"):
        load_benchmark("brats2021", root, cache_dir=tmp_path / "c1")
    with pytest.warns(UserWarning, match="skipped 1 of 3 cases"):
        train = load_benchmark("brats2021", root, split="train", on_bad_case="skip", cache_dir=tmp_path / "c2")
    assert "BraTS2021_01646" not in set(train["case_id"])
    # the real BraTS 2021 volume is read when only FLAIR is asked for
    flair_only = load_benchmark(
        "brats2021",
        root,
        split="train",
        modalities=("flair",),
        slice_modalities=("flair",),
        cache_dir=tmp_path / "c3",
    )
    case = [s for s in flair_only if s["case_id"] == "BraTS2021_01646"]
    assert len(case) == 6 and case[0]["spacing"] == [1.5, 1.5]
    assert any(set(np.unique(s["mask"]).tolist()) == {0, 2} for s in case)  # edema as label 2


def test_tnscui_csv_must_match_images(tmp_path):
    root = tnmix_layout(tmp_path / "tnmix", per_source=2)
    (root / "TNSCUI2020" / "image" / "2.PNG").unlink()
    with pytest.raises(FileNotFoundError, match=r"2\.PNG: mask without an image"):
        load_benchmark("tnmix", root, cache_dir=tmp_path / "c1")
    shutil.copy(root / "TNSCUI2020" / "image" / "1.PNG", root / "TNSCUI2020" / "image" / "7.PNG")
    shutil.copy(root / "TNSCUI2020" / "mask" / "1.PNG", root / "TNSCUI2020" / "mask" / "7.PNG")
    with pytest.warns(UserWarning, match=r"7\.PNG: not listed in .*train.csv"):
        train = load_benchmark("tnmix", root, split="train", on_bad_case="skip", cache_dir=tmp_path / "c2")
    assert sorted(c for c in train["case_id"] if c.startswith("tnscui")) == ["tnscui/1"]


def test_btcv_json_listing_a_missing_file(tmp_path):
    root = btcv_msd_layout(tmp_path / "btcv", second_depth=4)
    listing = json.loads((root / "dataset_0.json").read_text())
    listing["training"].append({"image": "imagesTr/img0040.nii.gz", "label": "labelsTr/label0040.nii.gz"})
    (root / "dataset_0.json").write_text(json.dumps(listing))
    with pytest.raises(FileNotFoundError, match=r"img0040.nii.gz: missing CT volume listed in dataset_0.json"):
        load_benchmark("btcv", root, cache_dir=tmp_path / "c1")
    (root / "dataset_0.json").write_text("{not json")
    with pytest.raises(DataLayoutError, match="dataset_0.json: invalid JSON"):
        load_benchmark("btcv", root, cache_dir=tmp_path / "c2")
