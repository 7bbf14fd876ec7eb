"""Arrange real files of ``../shared/data`` into the benchmarks' official layouts in a temporary folder.

The shared samples stand in for the full benchmarks (which cannot be downloaded here). Each helper copies (or,
where the official format differs, converts) a few real files into the layout a builder reads, and returns the
root to pass as ``data_dir``. Nothing is written inside the repository.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""``../shared/data`` relative to the repository root."""

requires_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"real data samples not found at {SHARED_DATA} (../shared/data relative to the repository root)",
)
"""Skip a test (or module, as ``pytestmark``) when the shared real data is absent."""

ISIC_YEARS = {
    "2016": {
        "train": ("ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth"),
        "test": ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),
    },
    "2017": {
        "train": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
        "validation": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
    },
    "2018": {
        "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
        "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
    },
}
ISIC_MASK_SUFFIX = {"2016": "_Segmentation.png", "2017": "_segmentation.png", "2018": "_segmentation.png"}


def isic_pairs(count: int) -> list[tuple[Path, Path, str]]:
    """``(image, mask, isic_id)`` of the first ``count`` ISIC 2016 samples (``NNN_ISIC_0000003.jpg``)."""
    images = sorted((SHARED_DATA / "isic2016_512" / "images").glob("*.jpg"))[:count]
    out = []
    for image in images:
        isic_id = image.stem.split("_", 1)[1]  # "000_ISIC_0000003" -> "ISIC_0000003"
        mask = SHARED_DATA / "isic2016_512" / "masks" / f"{image.stem}_Segmentation.jpg"
        out.append((image, mask, isic_id))
    return out


def binary_png(src: Path, dst: Path, threshold: int = 127) -> np.ndarray:
    """Save a (possibly JPEG) mask as the official lossless 0/255 PNG; returns the 0/1 mask."""
    values = np.asarray(Image.open(src).convert("L"))
    binary = (values > threshold).astype(np.uint8)
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(binary * 255).save(dst)
    return binary


def isic_layout(root: Path, year: str, per_split: int = 3) -> Path:
    """ISIC ``year`` Task 1 folders with ``per_split`` real cases per split (masks as 0/255 PNG)."""
    splits = ISIC_YEARS[year]
    pairs = isic_pairs(per_split * len(splits))
    for i, (image_dir, mask_dir) in enumerate(splits.values()):
        (root / image_dir).mkdir(parents=True, exist_ok=True)
        for image, mask, isic_id in pairs[i * per_split : (i + 1) * per_split]:
            shutil.copy(image, root / image_dir / f"{isic_id}.jpg")
            binary_png(mask, root / mask_dir / f"{isic_id}{ISIC_MASK_SUFFIX[year]}")
            if year == "2017":  # the 2017 release ships superpixel maps beside the images
                shutil.copy(mask, root / image_dir / f"{isic_id}_superpixels.png")
        (root / image_dir / "LICENSE.txt").write_text("CC-0\n")
    return root


def origa_to_refuge(mask: np.ndarray) -> np.ndarray:
    """ORIGA mask (0 background, 1 rim, 2 cup) -> REFUGE BMP values (255 background, 128 rim, 0 cup)."""
    out = np.full(mask.shape, 255, dtype=np.uint8)
    out[mask == 1] = 128
    out[mask == 2] = 0
    return out


def refuge2_layout(root: Path, counts: dict[str, int] | None = None) -> Path:
    """REFUGE2 ``train/``, ``val/``, ``test/`` with real ORIGA fundus crops; masks converted to REFUGE BMPs."""
    counts = counts or {"train": 3, "val": 2, "test": 1}
    images = sorted((SHARED_DATA / "origa_fundus" / "images").glob("*.png"))
    start = 0
    for split, count in counts.items():
        for image in images[start : start + count]:
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "mask").mkdir(parents=True, exist_ok=True)
            shutil.copy(image, root / split / "images" / image.name)
            origa = np.asarray(Image.open(SHARED_DATA / "origa_fundus" / "masks" / image.name))
            Image.fromarray(origa_to_refuge(origa)).save(root / split / "mask" / f"{image.stem}.bmp")
        start += count
    return root


def ddti_pairs(count: int, offset: int = 0) -> list[tuple[Path, Path]]:
    """``(image.png, mask.gif)`` real DDTI thyroid samples."""
    images = sorted((SHARED_DATA / "ddti_thyroid" / "images").glob("*.png"))[offset : offset + count]
    return [(image, SHARED_DATA / "ddti_thyroid" / "masks" / f"{image.stem}.gif") for image in images]


def tnmix_layout(root: Path, per_source: int = 3) -> Path:
    """``TNSCUI2020/``, ``DDTI/`` and ``TN3K/`` folders in their official layouts, filled with real DDTI cases.

    TN-SCUI gets PNG images and masks with ``train.csv`` (IDs ``N.PNG``); DDTI keeps its PNG images and GIF masks
    in ``p_image/`` / ``p_mask/``; TN3K gets JPEG images and masks (as released) in trainval / test folders.
    """
    tnscui = root / "TNSCUI2020"
    (tnscui / "image").mkdir(parents=True)
    (tnscui / "mask").mkdir()
    rows = [["ID", "CATE"]]
    for i, (image, mask) in enumerate(ddti_pairs(per_source), start=1):
        shutil.copy(image, tnscui / "image" / f"{i}.PNG")
        binary_png(mask, tnscui / "mask" / f"{i}.PNG")
        rows.append([f"{i}.PNG", str(i % 2)])
    with (tnscui / "train.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    ddti = root / "DDTI"
    (ddti / "p_image").mkdir(parents=True)
    (ddti / "p_mask").mkdir()
    for image, mask in ddti_pairs(per_source, offset=per_source):
        shutil.copy(image, ddti / "p_image" / image.name)
        shutil.copy(mask, ddti / "p_mask" / mask.name)
    tn3k = root / "TN3K"
    for split, offset in (("trainval", 2 * per_source), ("test", 3 * per_source)):
        (tn3k / f"{split}-image").mkdir(parents=True)
        (tn3k / f"{split}-mask").mkdir()
        for i, (image, mask) in enumerate(ddti_pairs(per_source, offset=offset)):
            Image.open(image).convert("L").save(tn3k / f"{split}-image" / f"{i:04d}.jpg", quality=95)
            values = (np.asarray(Image.open(mask).convert("L")) > 127).astype(np.uint8) * 255
            Image.fromarray(values).save(tn3k / f"{split}-mask" / f"{i:04d}.jpg", quality=95)
    return root


def brats_slice_volume(modality: str, slices: range) -> nib.Nifti1Image:
    """Stack real 2D BraTS 2020 slices (``brats2020_slices/00000N``) into a small 3D NIfTI (240 x 240 x len)."""
    planes = []
    for n in slices:
        folder = SHARED_DATA / "brats2020_slices" / f"{n:06d}"
        (path,) = folder.glob(f"brats_train_001_{modality}_*_w.nii.gz")
        planes.append(np.asanyarray(nib.load(path).dataobj))
    return nib.Nifti1Image(np.stack(planes, axis=-1), np.eye(4))


def brats_layout(root: Path) -> Path:
    """Two BraTS 2021 case folders built from the six real BraTS 2020 slices (3 slices each)."""
    for case, slices in (("BraTS2021_00001", range(1, 4)), ("BraTS2021_00002", range(4, 7))):
        (root / case).mkdir(parents=True)
        for modality in ("flair", "t1", "t1ce", "t2", "seg"):
            nib.save(brats_slice_volume(modality, slices), root / case / f"{case}_{modality}.nii.gz")
    return root


def brats_flair_only_case(root: Path, depth: int = 6) -> Path:
    """A BraTS case folder from the real BraTS 2021 FLAIR volume (cropped to ``depth`` slices through the edema)
    with its edema label as id 2, but without T1 / T1ce / T2 files: a case with missing modalities."""
    case = root / "BraTS2021_01646"
    case.mkdir(parents=True)
    flair = nib.load(SHARED_DATA / "brats2021_01646" / "flair.nii.gz")
    edema = np.asanyarray(nib.load(SHARED_DATA / "brats2021_01646" / "label_edema.nii.gz").dataobj)
    centre = int(np.argmax(edema.sum(axis=(0, 1))))
    window = slice(max(centre - depth // 2, 0), max(centre - depth // 2, 0) + depth)
    nib.save(
        nib.Nifti1Image(np.asanyarray(flair.dataobj)[..., window], flair.affine), case / f"{case.name}_flair.nii.gz"
    )
    nib.save(
        nib.Nifti1Image((edema[..., window] * 2).astype(np.uint8), flair.affine), case / f"{case.name}_seg.nii.gz"
    )
    return case


CT_IMAGE = "ct_volume_totalseg/example_ct_sm.nii.gz"
CT_LABEL = "ct_volume_totalseg/example_seg_btcv13.nii.gz"


def _save_crop(src: Path, dst: Path, depth: int) -> None:
    image = nib.load(src)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[..., :depth], image.affine, image.header), dst)


def btcv_synapse_layout(root: Path, second_depth: int = 12) -> Path:
    """``RawData/Training/{img,label}`` with the real CT (case 0001) and its first ``second_depth`` slices (0002)."""
    training = root / "RawData" / "Training"
    (training / "img").mkdir(parents=True)
    (training / "label").mkdir()
    shutil.copy(SHARED_DATA / CT_IMAGE, training / "img" / "img0001.nii.gz")
    shutil.copy(SHARED_DATA / CT_LABEL, training / "label" / "label0001.nii.gz")
    _save_crop(SHARED_DATA / CT_IMAGE, training / "img" / "img0002.nii.gz", second_depth)
    _save_crop(SHARED_DATA / CT_LABEL, training / "label" / "label0002.nii.gz", second_depth)
    return root


def btcv_msd_layout(root: Path, second_depth: int = 12) -> Path:
    """MSD-style ``imagesTr/``, ``labelsTr/`` and ``dataset_0.json`` (0001 training, 0002 validation)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    shutil.copy(SHARED_DATA / CT_IMAGE, root / "imagesTr" / "img0001.nii.gz")
    shutil.copy(SHARED_DATA / CT_LABEL, root / "labelsTr" / "label0001.nii.gz")
    _save_crop(SHARED_DATA / CT_IMAGE, root / "imagesTr" / "img0002.nii.gz", second_depth)
    _save_crop(SHARED_DATA / CT_LABEL, root / "labelsTr" / "label0002.nii.gz", second_depth)
    listing = {
        "description": "btcv",
        "labels": {"0": "background", "1": "spleen"},
        "training": [{"image": "imagesTr/img0001.nii.gz", "label": "labelsTr/label0001.nii.gz"}],
        "validation": [{"image": "imagesTr/img0002.nii.gz", "label": "labelsTr/label0002.nii.gz"}],
    }
    (root / "dataset_0.json").write_text(json.dumps(listing, indent=2))
    return root


def folder_layout_2d(root: Path, count: int = 4) -> Path:
    """A user's ``images/`` + ``masks/`` folder from real DDTI cases (PNG images, GIF masks, stems shared)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for image, mask in ddti_pairs(count):
        shutil.copy(image, root / "images" / image.name)
        shutil.copy(mask, root / "masks" / mask.name)
    return root
