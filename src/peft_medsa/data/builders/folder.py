"""A builder for a user's own data: ``images/`` + ``masks/`` paired by file stem, 2D images or NIfTI volumes.

Layout (``data_dir``)::

    images/<stem>.<png|jpg|gif|tif|bmp|nii.gz>   masks/<stem><mask_suffix>.<png|gif|tif|bmp|nii.gz>

or the same pair of folders inside ``train/``, ``validation/`` (or ``val/``) and ``test/``. For NIfTI,
``labels/`` is accepted in place of ``masks/``. 2D or 3D is decided by the image files (all of one kind).

Masks are either binary (default: 0/255 or 0/1, or ``value > mask_threshold`` with ``mask_threshold``) or label
maps with named classes (``label_names`` indexed by id, optionally ``mask_values`` mapping stored values to ids);
any other value is a bad case. 3D sets have the volume and slice views of `VolumeBuilderConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import datasets
import numpy as np

from ..io import DataLayoutError, Volume, file_stem, is_image_file, is_nifti_file, read_nifti
from ..labels import LabelSpec, binary_spec, spec_from_names
from ..transforms import CT_ABDOMEN_WINDOW, normalize_mri, window_ct
from .base import MedicalBuilder
from .cases import Case, MaskCoding, list_files, pair_files
from .features import image_features
from .volumes import VolumeBuilder, VolumeBuilderConfig, read_label_volume

SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}
INTENSITIES = ("ct", "mri", "minmax", None)


@dataclass
class MedicalFolderConfig(VolumeBuilderConfig):
    """Options of `MedicalFolderBuilder` (besides those of `VolumeBuilderConfig`, used by 3D sets).

    Args:
        images_dir: name of the images folder.
        masks_dir: name of the masks folder (for NIfTI, ``labels`` is tried when it is absent).
        mask_suffix: a mask's stem is its image's stem plus this (e.g. ``"_mask"``, ``"_Segmentation"``).
        mask_threshold: binary masks: foreground is ``value > mask_threshold`` (None: 0/255 or 0/1 only).
        label_names: label maps: class names indexed by id (``label_names[0]`` is background; ``""`` for unused
            ids). Stored values must be these ids unless ``mask_values`` maps them.
        mask_values: ``((stored_value, id), ...)`` for label maps stored with other values (e.g. 0/128/255).
        foreground_name: name of the target of binary masks.
        intensity: 3D: ``"ct"`` (window, see ``window``), ``"mri"`` (0.5-99.5 percentiles within nonzero voxels to
            ``[0, 1]``), ``"minmax"`` (default) or None (raw values; the slice view then min-max scales).
        window: CT window ``(level, width)`` in HU for ``intensity="ct"``.
    """

    images_dir: str = "images"
    masks_dir: str = "masks"
    mask_suffix: str = ""
    mask_threshold: int | None = None
    label_names: tuple[str, ...] | None = None
    mask_values: tuple[tuple[int, int], ...] | None = None
    foreground_name: str = "foreground"
    intensity: str | None = "minmax"
    window: tuple[float, float] = CT_ABDOMEN_WINDOW

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label_names is not None:
            self.label_names = tuple(self.label_names)
            if self.mask_threshold is not None:
                raise ValueError("set either label_names (label maps) or mask_threshold (binary masks), not both")
        if self.mask_values is not None:
            if self.label_names is None:
                raise ValueError("mask_values maps stored values to the ids of label_names; set label_names too")
            self.mask_values = tuple((int(v), int(i)) for v, i in self.mask_values)
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity={self.intensity!r}; expected one of {INTENSITIES}")


class MedicalFolderBuilder(VolumeBuilder):
    """A user's images + masks (2D) or NIfTI image + label pairs (3D), paired by file stem."""

    BUILDER_CONFIG_CLASS = MedicalFolderConfig
    LAYOUT = "images/ + masks/ paired by file stem (or inside train/, validation/, test/)"

    @property
    def LABELS(self) -> LabelSpec:  # noqa: N802 - overrides the class attribute of MedicalBuilder
        if self.config.label_names is not None:
            return spec_from_names("folder", self.config.label_names)
        return binary_spec("folder", self.config.foreground_name)

    def _split_dirs(self, root: Path) -> dict[str, Path]:
        if (root / self.config.images_dir).is_dir():
            return {"train": root}
        found = {}
        for split, names in SPLIT_FOLDERS.items():
            folder = next((root / n for n in names if (root / n / self.config.images_dir).is_dir()), None)
            if folder is not None:
                found[split] = folder
        return found

    @cached_property
    def is_3d(self) -> bool:
        """Whether the images are NIfTI volumes (decided from the first split's images folder)."""
        if not self.config.data_dir or not Path(self.config.data_dir).is_dir():
            return False
        dirs = self._split_dirs(Path(self.config.data_dir))
        if not dirs:
            return False
        folder = next(iter(dirs.values())) / self.config.images_dir
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        return bool(files) and all(is_nifti_file(p) for p in files)

    def _features(self) -> datasets.Features:
        if self.is_3d:
            return super()._features()
        return image_features()

    def _mask_coding(self, case: Case | None = None) -> MaskCoding:
        config, spec = self.config, self.LABELS
        if config.label_names is None:
            return MaskCoding(threshold=config.mask_threshold, names=tuple(spec.names_by_id()))
        if config.mask_values is not None:
            return MaskCoding.from_mapping(dict(config.mask_values), spec)
        return MaskCoding.identity(spec)

    def _list_splits(self, root: Path) -> dict[str, list[Case]]:
        dirs = self._split_dirs(root)
        if not dirs:
            raise DataLayoutError(f"{root}: no {self.config.images_dir}/ folder found; expected {self.LAYOUT}")
        if not self.is_3d and self.config.view == "volume":
            raise ValueError(f"{root}: view='volume' needs NIfTI volumes; the images are 2D")
        accept = is_nifti_file if self.is_3d else is_image_file
        kind = "NIfTI volumes (.nii/.nii.gz)" if self.is_3d else "images (PNG, JPEG, GIF, TIFF, BMP)"
        suffix = self.config.mask_suffix
        splits = {}
        for split, folder in dirs.items():
            images_dir = folder / self.config.images_dir
            masks_dir = folder / self.config.masks_dir
            if self.is_3d and not masks_dir.is_dir() and (folder / "labels").is_dir():
                masks_dir = folder / "labels"
            images = list_files(images_dir, lambda p: True, kind)
            wrong = [p.name for p in images if not accept(p)]
            if wrong:
                raise DataLayoutError(f"{images_dir}: files {wrong[:5]} are not {kind}; expected one kind of image")
            masks = list_files(masks_dir, accept, f"masks ({kind})")

            def mask_key(path: Path, suffix: str = suffix) -> str:
                stem = file_stem(path)
                return stem[: -len(suffix)] if suffix and stem.endswith(suffix) else stem

            splits[split] = pair_files(images, masks, mask_key=mask_key, images_dir=images_dir, masks_dir=masks_dir)
        return splits

    def _case_samples(self, case: Case) -> list[tuple[str, dict]]:
        if self.is_3d:
            return super()._case_samples(case)
        return MedicalBuilder._case_samples(self, case)

    def _load_volumes(self, case: Case) -> tuple[np.ndarray, np.ndarray, Volume]:
        case.check()
        volume = read_nifti(case.image, canonical=self.config.canonical)
        label = read_label_volume(case.mask, self._mask_coding(case), volume, canonical=self.config.canonical)
        intensity = self.config.intensity
        if intensity == "ct":
            image = window_ct(volume.array, *self.config.window)
        elif intensity == "mri":
            image = normalize_mri(volume.array, "percentile")
        elif intensity == "minmax":
            array = volume.array.astype(np.float32)
            image = (array - array.min()) / max(float(array.max() - array.min()), 1e-8)
        else:
            image = volume.array.astype(np.float32)
        return image.astype(np.float32), label, volume
