"""BraTS 2021 (RSNA-ASNR-MICCAI brain tumour segmentation): multi-modal glioma MRI.

Layout (``data_dir`` holds the case folders, or ``BraTS2021_Training_Data/`` holding them)::

    BraTS2021_00000/BraTS2021_00000_flair.nii.gz
                    BraTS2021_00000_t1.nii.gz
                    BraTS2021_00000_t1ce.nii.gz
                    BraTS2021_00000_t2.nii.gz
                    BraTS2021_00000_seg.nii.gz     labels 0, 1 (NCR), 2 (ED), 4 (ET)

Only the training release has labels: every case forms ``train`` (carve splits with ``val_fraction`` /
``test_fraction``). The evaluated regions are WT (1, 2, 4), TC (1, 4) and ET (4): see
`peft_medsa.data.labels.BRATS2021` and `peft_medsa.data.labels.region_masks`.

The volume view's ``image`` is ``(C, D, H, W)`` float32 with the channels named by ``modalities``; the slice
view's RGB image stacks the three ``slice_modalities``, each scaled to ``[0, 255]`` within the brain.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..io import DataLayoutError, Volume, read_nifti
from ..labels import BRATS2021
from ..transforms import normalize_mri, to_uint8
from .cases import Case, MaskCoding
from .volumes import VolumeBuilder, VolumeBuilderConfig, check_same_grid, read_label_volume

MODALITIES = ("flair", "t1", "t1ce", "t2")
_CASE = re.compile(r"^BraTS20\d\d_\d+$")


@dataclass
class BraTS2021Config(VolumeBuilderConfig):
    """BraTS 2021 options (besides those of `VolumeBuilderConfig`).

    Args:
        modalities: MRI sequences read, in channel order (default all four).
        slice_modalities: the three (or one) sequences forming the slice view's RGB (grey) image.
        normalization: volume view intensities: ``"percentile"`` (default; 0.5-99.5 percentiles of the brain to
            ``[0, 1]``), ``"zscore"`` (within the brain) or ``None`` (raw). The slice view always uses
            ``"percentile"``.
    """

    modalities: tuple[str, ...] = MODALITIES
    slice_modalities: tuple[str, ...] = ("flair", "t1ce", "t2")
    normalization: str | None = "percentile"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.modalities = tuple(self.modalities)
        self.slice_modalities = tuple(self.slice_modalities)
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities={self.modalities}; expected a subset of {MODALITIES}")
        if not set(self.slice_modalities) <= set(self.modalities) or len(self.slice_modalities) not in (1, 3):
            raise ValueError(f"slice_modalities={self.slice_modalities}; expected 1 or 3 of {self.modalities}")
        if self.normalization not in ("percentile", "zscore", None):
            raise ValueError(f"normalization={self.normalization!r}; expected 'percentile', 'zscore' or None")


class BraTS2021Builder(VolumeBuilder):
    """BraTS 2021 glioma MRI (FLAIR, T1, T1ce, T2; labels 1 NCR, 2 ED, 4 ET)."""

    BUILDER_CONFIG_CLASS = BraTS2021Config
    LABELS = BRATS2021
    LAYOUT = "BraTS2021_NNNNN/BraTS2021_NNNNN_{flair,t1,t1ce,t2,seg}.nii.gz case folders"

    @property
    def CHANNELS(self) -> bool:  # noqa: N802 - overrides the class attribute of VolumeBuilder
        return self.config.view == "volume"

    def _extra_features(self) -> dict:
        return {"modalities": datasets.List(datasets.Value("string"))}

    def _list_splits(self, root: Path) -> dict[str, list[Case]]:
        nested = root / "BraTS2021_Training_Data"
        base = nested if nested.is_dir() else root
        folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        cases = [p for p in folders if _CASE.match(p.name)]
        others = [p.name for p in folders if not _CASE.match(p.name)]
        if not cases:
            raise DataLayoutError(f"{base}: no BraTS case folder found; expected {self.LAYOUT}")
        if others:
            warnings.warn(f"{base}: ignoring folders that are not BraTS cases: {others}", stacklevel=2)
        return {"train": [self._case(folder) for folder in cases]}

    def _case(self, folder: Path) -> Case:
        files = {m: folder / f"{folder.name}_{m}.nii.gz" for m in (*self.config.modalities, "seg")}
        missing = [path.name for path in files.values() if not path.is_file()]
        problem = f"{folder}: missing {', '.join(missing)}; expected {self.LAYOUT}" if missing else None
        case_files = {m: p for m, p in files.items() if m != "seg"}
        channels = self.config.slice_modalities if self.config.view == "slice" else self.config.modalities
        extra = {"modalities": list(channels)}
        return Case(case_id=folder.name, mask=files["seg"], files=case_files, extra=extra, problem=problem)

    def _load_volumes(self, case: Case) -> tuple[np.ndarray, np.ndarray, Volume]:
        case.check()
        canonical = self.config.canonical
        volumes = [read_nifti(case.files[m], canonical=canonical) for m in self.config.modalities]
        reference = volumes[0]
        for volume in volumes[1:]:
            check_same_grid(volume, reference, "modality")
        label = read_label_volume(case.mask, MaskCoding.identity(self.LABELS), reference, canonical=canonical)
        brain = np.any([v.array != 0 for v in volumes], axis=0)
        if self.config.view == "slice":
            chosen = [self.config.modalities.index(m) for m in self.config.slice_modalities]
            image = np.stack([normalize_mri(volumes[i].array, "percentile", foreground=brain) for i in chosen])
        elif self.config.normalization is None:
            image = np.stack([v.array.astype(np.float32) for v in volumes])
        else:
            image = np.stack([normalize_mri(v.array, self.config.normalization, foreground=brain) for v in volumes])
        return image, label, reference

    def _slice_pixels(self, image: np.ndarray) -> np.ndarray:
        pixels = to_uint8(image)  # (C, D, H, W), already in [0, 1]
        return pixels[0] if len(pixels) == 1 else np.moveaxis(pixels, 0, -1)
