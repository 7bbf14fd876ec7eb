"""BTCV (Beyond the Cranial Vault, Synapse multi-organ abdominal CT): 13 organs, 30 labelled training scans.

Two layouts are read (``data_dir`` is the folder that holds them):

- Synapse release: ``RawData/Training/img/imgNNNN.nii.gz`` with ``RawData/Training/label/labelNNNN.nii.gz``
  (``data_dir`` may also be ``RawData/``). All labelled cases form the ``train`` split (carve a validation split
  with ``val_fraction``); ``RawData/Testing`` has no labels and is not read.
- MSD-style layout of the MONAI / UNETR tutorials: ``imagesTr/imgNNNN.nii.gz``, ``labelsTr/labelNNNN.nii.gz`` and
  ``dataset_0.json`` whose ``"training"`` / ``"validation"`` lists of ``{"image", "label"}`` (paths relative to
  ``data_dir``) give the ``train`` / ``validation`` splits. Without the JSON, ``imagesTr`` / ``labelsTr`` are
  paired by number into ``train``.

Case ids are the image file stems (``img0001``). Labels: `peft_medsa.data.labels.BTCV` (ids 1-13).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import DataLayoutError, Volume, file_stem, is_nifti_file, read_nifti
from ..labels import BTCV as BTCV_LABELS
from ..transforms import CT_ABDOMEN_WINDOW, window_ct
from .cases import Case, MaskCoding, list_files, pair_files
from .volumes import VolumeBuilder, VolumeBuilderConfig, read_label_volume

_NUMBER = re.compile(r"(\d+)$")


@dataclass
class BTCVConfig(VolumeBuilderConfig):
    """BTCV options (besides those of `VolumeBuilderConfig`).

    Args:
        window: CT window ``(level, width)`` in HU mapping intensities to ``[0, 1]``; default abdomen (40, 400).
            ``None`` keeps HU in the volume view (the slice view then min-max scales each volume).
        json_file: name of the MSD-style split file in ``data_dir``.
    """

    window: tuple[float, float] | None = CT_ABDOMEN_WINDOW
    json_file: str = "dataset_0.json"


def _case_number(path: Path) -> str:
    match = _NUMBER.search(file_stem(path))
    return match.group(1) if match else file_stem(path)


class BTCVBuilder(VolumeBuilder):
    """BTCV abdominal CT (13 organs), Synapse or MSD-style (``dataset_0.json``) layout."""

    BUILDER_CONFIG_CLASS = BTCVConfig
    LABELS = BTCV_LABELS
    LAYOUT = "RawData/Training/{img,label}/ (Synapse) or imagesTr/, labelsTr/ and dataset_0.json (MSD-style)"

    def _list_splits(self, root: Path) -> dict[str, list[Case]]:
        json_path = root / self.config.json_file
        if json_path.is_file():
            return self._from_json(root, json_path)
        for training in (root / "RawData" / "Training", root / "Training"):
            if training.is_dir():
                return {"train": self._pair(training / "img", training / "label")}
        if (root / "imagesTr").is_dir():
            return {"train": self._pair(root / "imagesTr", root / "labelsTr")}
        raise DataLayoutError(f"{root}: no BTCV layout found; expected {self.LAYOUT}")

    def _pair(self, images_dir: Path, labels_dir: Path) -> list[Case]:
        images = list_files(images_dir, is_nifti_file, "CT volumes (imgNNNN.nii.gz)")
        labels = list_files(labels_dir, is_nifti_file, "label volumes (labelNNNN.nii.gz)")
        by_number = {_case_number(p): file_stem(p) for p in images}
        return pair_files(
            images,
            labels,
            image_key=_case_number,
            mask_key=_case_number,
            images_dir=images_dir,
            masks_dir=labels_dir,
            case_id=lambda number: by_number.get(number, f"img{number}"),
        )

    def _from_json(self, root: Path, json_path: Path) -> dict[str, list[Case]]:
        try:
            listing = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataLayoutError(f"{json_path}: invalid JSON ({err}); expected the MSD-style split file") from err
        if not isinstance(listing, dict) or not isinstance(listing.get("training"), list):
            raise DataLayoutError(f'{json_path}: no "training" list; expected {{"training": [{{"image", "label"}}]}}')
        splits = {}
        for key, split in (("training", "train"), ("validation", "validation")):
            cases = []
            for i, entry in enumerate(listing.get(key) or []):
                if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                    raise DataLayoutError(f'{json_path}: entry {i} of "{key}" is {entry!r}; expected image and label')
                image, label = root / entry["image"], root / entry["label"]
                problem = None
                for path, what in ((image, "CT volume"), (label, "label volume")):
                    if not path.is_file():
                        problem = f"{path}: missing {what} listed in {json_path.name} ({key}[{i}])"
                        break
                cases.append(Case(case_id=file_stem(image), image=image, mask=label, problem=problem))
            if cases:
                splits[split] = cases
        if not splits.get("train"):
            raise DataLayoutError(f'{json_path}: empty "training" list; expected the labelled training cases')
        return splits

    def _load_volumes(self, case: Case) -> tuple[np.ndarray, np.ndarray, Volume]:
        case.check()
        ct = read_nifti(case.image, canonical=self.config.canonical)
        coding = MaskCoding.identity(self.LABELS)
        label = read_label_volume(case.mask, coding, ct, canonical=self.config.canonical)
        window = self.config.window
        image = window_ct(ct.array, *window) if window is not None else ct.array.astype(np.float32)
        return image, label, ct
