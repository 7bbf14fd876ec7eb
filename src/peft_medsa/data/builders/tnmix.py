"""TNMIX thyroid nodule ultrasound: TN-SCUI 2020 + DDTI mixed as in the Med-SA paper (TN3K optional).

``data_dir`` holds one folder per source, recognised by name (case, ``-`` and ``_`` ignored): ``TNSCUI*`` (or
``TN-SCUI*``), ``DDTI*``, ``TN3K*``. Each keeps its official layout:

- TN-SCUI 2020: ``image/``, ``mask/`` (same file names) and ``train.csv`` whose first column lists the image
  files (``ID``); an image not listed, or a listed image that is missing, is a bad case.
- DDTI: ``image/`` + ``mask/``, or the preprocessed ``p_image/`` + ``p_mask/``; paired by file stem.
- TN3K: ``trainval-image/`` + ``trainval-mask/`` (``train``) and ``test-image/`` + ``test-mask/`` (``test``).

``subsets`` picks the sources (default TN-SCUI + DDTI, the paper's mix); their cases are pooled into ``train``
(TN3K's test folder gives ``test``). Case ids are ``<source>/<file stem>`` and the ``source`` column names the
source. Masks are binary 0/255 (or 0/1); JPEG masks (TN3K) are thresholded at 127.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import datasets

from ..io import DataLayoutError, file_stem, is_image_file
from ..labels import TNMIX
from .base import MedicalBuilder, MedicalBuilderConfig
from .cases import Case, MaskCoding, list_files, pair_files
from .features import image_features

SOURCES = ("tnscui", "ddti", "tn3k")


@dataclass
class TNMIXConfig(MedicalBuilderConfig):
    """TNMIX options (besides those of `MedicalBuilderConfig`).

    Args:
        subsets: sources to mix, among ``"tnscui"``, ``"ddti"``, ``"tn3k"`` (default the paper's TN-SCUI + DDTI).
        mask_threshold: binarise every mask as ``value > mask_threshold`` (for resized masks); default None
            accepts only 0/255 or 0/1 in lossless masks.
    """

    subsets: tuple[str, ...] = ("tnscui", "ddti")
    mask_threshold: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.subsets = tuple(self.subsets)
        if not self.subsets or not set(self.subsets) <= set(SOURCES):
            raise ValueError(f"subsets={self.subsets}; expected a non-empty subset of {SOURCES}")


def _normalised(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


class TNMIXBuilder(MedicalBuilder):
    """TNMIX thyroid ultrasound: TN-SCUI 2020 + DDTI (+ TN3K) nodules, binary masks."""

    BUILDER_CONFIG_CLASS = TNMIXConfig
    LABELS = TNMIX
    LAYOUT = (
        "TNSCUI*/ (image/, mask/, train.csv), DDTI*/ (image/ + mask/ or p_image/ + p_mask/), "
        "TN3K*/ (trainval-image/, trainval-mask/, test-image/, test-mask/)"
    )

    def _features(self) -> datasets.Features:
        return image_features({"source": datasets.Value("string")})

    def _mask_coding(self, case: Case) -> MaskCoding:
        return MaskCoding(threshold=self.config.mask_threshold, names=tuple(self.LABELS.names_by_id()))

    def _source_dir(self, root: Path, source: str) -> Path:
        found = [p for p in root.iterdir() if p.is_dir() and _normalised(p.name).startswith(source)]
        if len(found) != 1:
            what = "no folder" if not found else f"{len(found)} folders ({', '.join(p.name for p in found)})"
            raise DataLayoutError(f"{root}: {what} for source {source!r}; expected one of {self.LAYOUT}")
        return found[0]

    def _list_splits(self, root: Path) -> dict[str, list[Case]]:
        splits: dict[str, list[Case]] = {}
        for source in self.config.subsets:
            folder = self._source_dir(root, source)
            for split, cases in getattr(self, f"_list_{source}")(folder).items():
                for case in cases:
                    case.case_id = f"{source}/{case.case_id}"
                    case.extra["source"] = source
                splits.setdefault(split, []).extend(cases)
        return splits

    @staticmethod
    def _pair(images_dir: Path, masks_dir: Path) -> list[Case]:
        images = list_files(images_dir, is_image_file, "ultrasound images")
        masks = list_files(masks_dir, is_image_file, "nodule masks")
        return pair_files(images, masks, images_dir=images_dir, masks_dir=masks_dir)

    def _list_tn3k(self, folder: Path) -> dict[str, list[Case]]:
        splits = {}
        for split, prefix in (("train", "trainval"), ("test", "test")):
            if (folder / f"{prefix}-image").is_dir():
                splits[split] = self._pair(folder / f"{prefix}-image", folder / f"{prefix}-mask")
        if not splits:
            raise DataLayoutError(f"{folder}: no trainval-image/ or test-image/; expected the TN3K layout")
        return splits

    def _list_ddti(self, folder: Path) -> dict[str, list[Case]]:
        for images, masks in (("image", "mask"), ("p_image", "p_mask")):
            if (folder / images).is_dir():
                return {"train": self._pair(folder / images, folder / masks)}
        raise DataLayoutError(f"{folder}: no image/ or p_image/ folder; expected the DDTI layout")

    def _list_tnscui(self, folder: Path) -> dict[str, list[Case]]:
        table = folder / "train.csv"
        if not table.is_file():
            raise DataLayoutError(f"{table}: missing; expected the TN-SCUI 2020 case list (columns ID, CATE)")
        with table.open(newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and row[0].strip()]
        if not rows or rows[0][0].strip().upper() != "ID":
            raise DataLayoutError(f"{table}: first column is not 'ID'; expected the TN-SCUI 2020 train.csv")
        listed = {file_stem(row[0].strip()).lower(): row[0].strip() for row in rows[1:]}
        cases = self._pair(folder / "image", folder / "mask")
        for case in cases:
            if case.case_id.lower() not in listed and case.problem is None:
                case.problem = f"{case.image}: not listed in {table}; expected every image to have a row"
        found = {case.case_id.lower() for case in cases}
        for key, name in sorted(listed.items()):
            if key not in found:
                problem = f"{table}: lists {name} but {folder / 'image'} has no such image"
                cases.append(Case(case_id=file_stem(name), problem=problem))
        return {"train": cases}
