"""REFUGE2 (Retinal Fundus Glaucoma Challenge, 2nd edition): optic disc and optic cup in fundus photographs.

Layout read (the REFUGE2 release: one folder per split, images and masks paired by file stem)::

    data_dir/train/images/*.jpg   data_dir/train/mask/*.bmp     (``masks/`` is accepted too)
    data_dir/val/images/*.jpg     data_dir/val/mask/*.bmp       (``validation/`` is accepted too)
    data_dir/test/images/*.jpg    data_dir/test/mask/*.bmp

Masks follow the REFUGE convention, one grey value per class: 0 optic cup, 128 optic disc rim (disc minus cup),
255 background; any other value is an error (lossless BMP/PNG expected). Samples hold ``mask`` as a label map
(0 background, 1 rim, 2 cup: `peft_medsa.data.labels.REFUGE2`) and the two evaluated targets as binary masks:
``disc`` (rim or cup) and ``cup``.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ..io import DataLayoutError, is_image_file
from ..labels import REFUGE2, REFUGE_MASK_VALUES
from .base import MedicalBuilder
from .cases import Case, MaskCoding, list_files, load_pair, pair_files
from .features import encode_png, image_features

SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}
MASK_FOLDERS = ("mask", "masks")


class REFUGE2Builder(MedicalBuilder):
    """REFUGE2 fundus photographs with optic disc / cup masks (REFUGE BMP convention)."""

    LABELS = REFUGE2
    LAYOUT = "train/, val/ and test/ folders, each with images/ and mask/ (REFUGE BMP: 0 cup, 128 rim, 255 background)"

    def _features(self) -> datasets.Features:
        return image_features({"disc": datasets.Image(), "cup": datasets.Image()})

    def _mask_coding(self, case: Case) -> MaskCoding:
        return MaskCoding.from_mapping(REFUGE_MASK_VALUES, self.LABELS)

    def _list_splits(self, root: Path) -> dict[str, list[Case]]:
        splits = {}
        for split, names in SPLIT_FOLDERS.items():
            folder = next((root / n for n in names if (root / n).is_dir()), None)
            if folder is None:
                continue
            masks_dir = next((folder / n for n in MASK_FOLDERS if (folder / n).is_dir()), folder / "mask")
            images = list_files(folder / "images", is_image_file, "fundus images")
            masks = list_files(masks_dir, is_image_file, "REFUGE masks (.bmp)")
            splits[split] = pair_files(images, masks, images_dir=folder / "images", masks_dir=masks_dir)
        if not splits:
            raise DataLayoutError(f"{root}: no REFUGE2 split folder found; expected {self.LAYOUT}")
        return splits

    def _case_samples(self, case: Case) -> list[tuple[str, dict]]:
        image, label = load_pair(case, self._mask_coding(case))
        disc, cup = (label >= 1).astype("uint8"), (label == 2).astype("uint8")
        sample = self._sample_2d(case, image, label, disc=encode_png(disc), cup=encode_png(cup))
        return [(case.case_id, sample)]
