"""ISIC skin lesion segmentation (ISIC 2016, 2017, 2018 Task 1) in the official folder names.

Pick the release with the config name ``"2016"``, ``"2017"`` or ``"2018"`` (default). Images are
``ISIC_NNNNNNN.jpg``; masks ``ISIC_NNNNNNN_Segmentation.png`` (2016) or ``ISIC_NNNNNNN_segmentation.png``
(2017, 2018), binary 0/255. Other files of the release folders (``*_superpixels.png`` of 2017, licence and
attribution texts, metadata CSVs) are not cases and are ignored. A split whose ground-truth folder is absent is
left out with a warning. ISIC 2019 (named in the Med-SA paper) is a classification challenge without masks.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from ..io import DataLayoutError
from ..labels import ISIC
from .base import MedicalBuilder, MedicalBuilderConfig
from .cases import Case, list_files, pair_files

LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "2016": {
        "train": ("ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth"),
        "test": ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),
    },
    "2017": {
        "train": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
        "validation": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
        "test": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
    },
    "2018": {
        "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
        "validation": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
        "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
    },
}
"""Release -> split -> (image folder, ground-truth folder), as in the official archives."""

_IMAGE = re.compile(r"^(ISIC_\d+)\.(jpe?g|png)$", re.IGNORECASE)
_MASK = re.compile(r"^(ISIC_\d+)_segmentation\.png$", re.IGNORECASE)


def _isic_id(path: Path) -> str:
    match = _IMAGE.match(path.name) or _MASK.match(path.name)
    return match.group(1).upper()


class ISICBuilder(MedicalBuilder):
    """ISIC 2016 / 2017 / 2018 Task 1 dermoscopy lesion segmentation."""

    BUILDER_CONFIGS = [
        MedicalBuilderConfig(name=year, description=f"ISIC {year} Task 1 lesion segmentation") for year in LAYOUTS
    ]
    DEFAULT_CONFIG_NAME = "2018"
    LABELS = ISIC

    @property
    def LAYOUT(self) -> str:  # noqa: N802 - overrides the class attribute of MedicalBuilder
        folders = [f"{image}/ + {mask}/" for image, mask in LAYOUTS[self.config.name].values()]
        return f"the ISIC {self.config.name} folders " + "; ".join(folders)

    def _list_splits(self, root: Path) -> dict[str, list[Case]]:
        splits = {}
        for split, (image_name, mask_name) in LAYOUTS[self.config.name].items():
            images_dir, masks_dir = root / image_name, root / mask_name
            if not images_dir.is_dir():
                continue
            if not masks_dir.is_dir():
                warnings.warn(f"{masks_dir}: missing; split {split!r} has no masks and is left out", stacklevel=2)
                continue
            images = list_files(images_dir, lambda p: bool(_IMAGE.match(p.name)), "ISIC_NNNNNNN.jpg images")
            masks = list_files(masks_dir, lambda p: bool(_MASK.match(p.name)), "ISIC_NNNNNNN_segmentation.png masks")
            splits[split] = pair_files(
                images, masks, image_key=_isic_id, mask_key=_isic_id, images_dir=images_dir, masks_dir=masks_dir
            )
        if not splits:
            raise DataLayoutError(f"{root}: no ISIC {self.config.name} split with masks found; expected {self.LAYOUT}")
        return splits
