"""2D builders (ISIC, REFUGE2, TNMIX, folder) on real files arranged in the official layouts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from peft_medsa.data import ISICBuilder, load_benchmark
from peft_medsa.data.io import read_mask

from data_layouts import (
    SHARED_DATA,
    ddti_pairs,
    folder_layout_2d,
    isic_layout,
    isic_pairs,
    origa_to_refuge,
    refuge2_layout,
    requires_data,
    tnmix_layout,
)

pytestmark = [requires_data, pytest.mark.real_data]


@pytest.mark.parametrize("year", ["2016", "2017", "2018"])
def test_isic_official_layouts(tmp_path, year):
    root = isic_layout(tmp_path / "isic", year, per_split=2)
    dataset = load_benchmark("isic", root, year=year, cache_dir=tmp_path / "cache")
    expected = {"2016": {"train", "test"}, "2017": {"train", "validation"}, "2018": {"train", "test"}}[year]
    assert set(dataset) == expected and all(len(split) == 2 for split in dataset.values())  # superpixels ignored
    sample = dataset["train"][0]
    image, mask, isic_id = isic_pairs(1)[0]
    assert sample["case_id"] == isic_id
    assert sample["image"].shape == (512, 512, 3) and sample["image"].dtype == np.uint8
    assert sample["mask"].shape == (512, 512) and set(np.unique(sample["mask"]).tolist()) == {0, 1}
    assert np.array_equal(sample["mask"], (read_mask(mask) > 127).astype(np.uint8))
    assert np.array_equal(sample["image"], np.asarray(Image.open(image)))  # JPEG bytes kept as released
    assert sample["spacing"] == [1.0, 1.0] and sample["label_names"] == ["background", "skin lesion"]


def test_isic_builder_direct_use(tmp_path):
    builder = ISICBuilder(data_dir=str(isic_layout(tmp_path / "isic", "2018", 2)), cache_dir=str(tmp_path / "c"))
    builder.download_and_prepare()
    train = builder.as_dataset("train")
    assert builder.config.name == "2018" and train.num_rows == 2
    assert train[0]["image"].mode == "RGB" and train[0]["mask"].mode == "L"  # datasets defaults: PIL images


def test_refuge2_disc_and_cup(tmp_path):
    root = refuge2_layout(tmp_path / "refuge2")
    dataset = load_benchmark("refuge2", root, cache_dir=tmp_path / "cache")
    assert {name: len(split) for name, split in dataset.items()} == {"train": 3, "validation": 2, "test": 1}
    sample = dataset["train"][0]
    origa = read_mask(SHARED_DATA / "origa_fundus" / "masks" / f"{sample['case_id']}.png")
    assert np.array_equal(sample["mask"], origa)  # 255/128/0 BMP -> ids 0/1/2
    assert np.array_equal(sample["disc"], (origa >= 1).astype(np.uint8))
    assert np.array_equal(sample["cup"], (origa == 2).astype(np.uint8))
    assert sample["cup"].sum() < sample["disc"].sum()
    assert sample["label_names"] == ["background", "optic disc rim", "optic cup"]
    assert sample["image"].shape == (640, 640, 3)


def test_refuge2_rejects_values_outside_convention(tmp_path):
    root = refuge2_layout(tmp_path / "refuge2", {"train": 2})
    bmp = sorted((root / "train" / "mask").glob("*.bmp"))[0]
    values = np.asarray(Image.open(bmp)).copy()
    values[:5, :5] = 64
    Image.fromarray(values).save(bmp)
    with pytest.raises(ValueError, match=rf"{bmp.name}.*\{{64\}}.*128 \(optic disc rim\)"):
        load_benchmark("refuge2", root, cache_dir=tmp_path / "cache")


def test_tnmix_paper_mix_and_tn3k(tmp_path):
    root = tnmix_layout(tmp_path / "tnmix", per_source=2)
    mix = load_benchmark("tnmix", root, split="train", cache_dir=tmp_path / "cache")
    ddti_stems = [image.stem for image, _ in ddti_pairs(2, offset=2)]  # tnmix_layout: DDTI cases 3-4
    assert sorted(mix["case_id"]) == sorted([f"ddti/{stem}" for stem in ddti_stems] + ["tnscui/1", "tnscui/2"])
    assert set(mix["source"]) == {"tnscui", "ddti"}
    for sample in mix:
        assert sample["image"].shape == (300, 300, 3) and set(np.unique(sample["mask"]).tolist()) == {0, 1}
    tnscui_first = next(s for s in mix if s["case_id"] == "tnscui/1")
    first_gif = read_mask(ddti_pairs(1)[0][1])
    assert np.array_equal(tnscui_first["mask"], (first_gif > 127).astype(np.uint8))
    all_three = load_benchmark("tnmix", root, subsets=("tnscui", "ddti", "tn3k"), cache_dir=tmp_path / "cache")
    assert len(all_three["train"]) == 6 and len(all_three["test"]) == 2
    tn3k = next(s for s in all_three["train"] if s["case_id"] == "tn3k/0000")
    # JPEG masks are thresholded at 127: the nodule matches the lossless original closely
    original = (read_mask(ddti_pairs(1, offset=4)[0][1]) > 127).astype(np.uint8)
    assert (tn3k["mask"] != original).mean() < 0.01


def test_folder_binary_and_label_map(tmp_path):
    root = folder_layout_2d(tmp_path / "own", count=3)
    binary = load_benchmark("folder", root, split="train", cache_dir=tmp_path / "cache")
    assert binary.num_rows == 3 and binary[0]["label_names"] == ["background", "foreground"]
    assert set(np.unique(binary[0]["mask"]).tolist()) == {0, 1}
    # a label map with named classes, stored as REFUGE-like grey values, split folders, and a mask suffix
    own = tmp_path / "fundus"
    for split, names in (("train", ["621", "622"]), ("val", ["624"])):
        (own / split / "images").mkdir(parents=True)
        (own / split / "masks").mkdir()
        for name in names:
            Image.open(SHARED_DATA / "origa_fundus" / "images" / f"{name}.png").save(
                own / split / "images" / f"{name}.png"
            )
            origa = np.asarray(Image.open(SHARED_DATA / "origa_fundus" / "masks" / f"{name}.png"))
            Image.fromarray(origa_to_refuge(origa)).save(own / split / "masks" / f"{name}_mask.tif")
    dataset = load_benchmark(
        "folder",
        own,
        cache_dir=tmp_path / "cache",
        mask_suffix="_mask",
        label_names=("background", "rim", "cup"),
        mask_values=((255, 0), (128, 1), (0, 2)),
    )
    assert {k: len(v) for k, v in dataset.items()} == {"train": 2, "validation": 1}
    sample = dataset["validation"][0]
    assert sample["label_names"] == ["background", "rim", "cup"]
    assert np.array_equal(sample["mask"], read_mask(SHARED_DATA / "origa_fundus" / "masks" / "624.png"))


def test_val_fraction_carves_a_validation_split(tmp_path):
    root = folder_layout_2d(tmp_path / "own", count=4)
    first = load_benchmark("folder", root, val_fraction=0.25, split_seed=3, cache_dir=tmp_path / "c1")
    again = load_benchmark("folder", root, val_fraction=0.25, split_seed=3, cache_dir=tmp_path / "c2")
    assert len(first["train"]) == 3 and len(first["validation"]) == 1
    assert first["validation"]["case_id"] == again["validation"]["case_id"]
    assert not set(first["validation"]["case_id"]) & set(first["train"]["case_id"])
