"""The shared base of 3D builders: volume view, per-slice view, optional resize to 128^3.

A 3D builder reads a case into a float image (``(D, H, W)``, or ``(C, D, H, W)`` for multi-modal MRI) in
model-ready intensities, a ``(D, H, W)`` uint8 label map and the reference geometry; this module turns it into
either one volume sample or one 2D sample per axial slice (index ``d`` of ``(D, H, W)``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..io import DataLayoutError, Volume, read_nifti
from ..transforms import resize_volume, resized_affine, resized_spacing, to_uint8
from .base import MedicalBuilder, MedicalBuilderConfig
from .cases import Case, MaskCoding
from .features import encode_png, slice_features, volume_features

VIEWS = ("slice", "volume")


@dataclass
class VolumeBuilderConfig(MedicalBuilderConfig):
    """Options of 3D builders (besides those of `MedicalBuilderConfig`).

    Args:
        view: ``"slice"`` (default): one 2D sample per slice ``d`` of the ``(D, H, W)`` volume, in the 2D schema
            plus ``slice_index`` / ``num_slices``, intensities mapped to ``np.uint8``; ``"volume"``: one 3D sample
            per case with float intensities.
        volume_size: resize each case to this ``(D, H, W)`` first, e.g. ``(128, 128, 128)`` as in the paper;
            spacing and affine are updated, and ``original_shape`` / ``original_affine`` keep the way back.
        keep_empty_slices: slice view: also yield slices whose mask is empty (default True).
        canonical: reorient NIfTI files to the closest RAS+ orientation first.
    """

    view: str = "slice"
    volume_size: tuple[int, int, int] | None = None
    keep_empty_slices: bool = True
    canonical: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.view not in VIEWS:
            raise ValueError(f"view={self.view!r}; expected one of {VIEWS}")
        if self.volume_size is not None:
            size = tuple(int(s) for s in self.volume_size)
            if len(size) != 3 or min(size) <= 0:
                raise ValueError(f"volume_size={self.volume_size!r}; expected three positive ints (D, H, W)")
            self.volume_size = size


def check_same_grid(volume: Volume, reference: Volume, what: str) -> None:
    """Raise `DataLayoutError` if ``volume`` and ``reference`` differ in shape; warn if their affines differ."""
    if volume.array.shape != reference.array.shape:
        raise DataLayoutError(
            f"{volume.path}: {what} of shape {volume.array.shape} (D, H, W); expected the shape of "
            f"{reference.path.name}, {reference.array.shape}"
        )
    if not np.allclose(volume.affine, reference.affine, atol=1e-3, rtol=1e-4):
        warnings.warn(f"{volume.path}: affine differs from {reference.path.name}'s; using the latter", stacklevel=2)


def read_label_volume(path: Path, coding: MaskCoding, reference: Volume, *, canonical: bool = False) -> np.ndarray:
    """Read a label NIfTI on the grid of ``reference`` and map its values to ids.

    Returns:
        ``(D, H, W)`` ``np.uint8`` label map.

    Raises:
        DataLayoutError: shape mismatch or values outside the declared labels (subclasses for missing /
            unreadable files).
    """
    label = read_nifti(path, canonical=canonical)
    check_same_grid(label, reference, "label volume")
    return coding.decode(label.array, path)


def unit_range(image: np.ndarray) -> np.ndarray:
    """Map intensities to ``[0, 1]`` for display as uint8: kept if already inside, else min-max per channel."""
    image = np.asarray(image, dtype=np.float32)
    if image.size and image.min() >= 0.0 and image.max() <= 1.0:
        return image
    lead = image.shape[:-3]
    flat = image.reshape(*lead, -1) if lead else image.reshape(1, -1)
    low, high = flat.min(axis=-1), flat.max(axis=-1)
    shape = (*lead, 1, 1, 1) if lead else (1, 1, 1)
    return (image - low.reshape(shape)) / np.maximum(high - low, 1e-8).reshape(shape)


class VolumeBuilder(MedicalBuilder):
    """Base of 3D builders. Subclasses implement `_list_splits` and `_load_volumes`."""

    BUILDER_CONFIG_CLASS = VolumeBuilderConfig
    CHANNELS = False
    """Whether the volume image has a leading channel axis ``(C, D, H, W)``."""

    def _extra_features(self) -> dict:
        return {}

    def _features(self) -> datasets.Features:
        if self.config.view == "volume":
            return volume_features(channels=self.CHANNELS, extra=self._extra_features())
        return slice_features(self._extra_features())

    def _load_volumes(self, case: Case) -> tuple[np.ndarray, np.ndarray, Volume]:
        """Read a case: float image ``(D, H, W)`` / ``(C, D, H, W)``, uint8 label ``(D, H, W)``, reference volume."""
        raise NotImplementedError

    def _slice_pixels(self, image: np.ndarray) -> np.ndarray:
        """``np.uint8`` slices ``(D, H, W)`` (grey) or ``(D, H, W, 3)`` (RGB) from the float image."""
        return to_uint8(unit_range(image))

    def _case_samples(self, case: Case) -> list[tuple[str, dict]]:
        config = self.config
        image, label, reference = self._load_volumes(case)
        original_shape = tuple(int(s) for s in label.shape)
        spacing, affine = reference.spacing, reference.affine
        if config.volume_size is not None:
            image = resize_volume(image, config.volume_size)
            label = resize_volume(label, config.volume_size, is_label=True)
            spacing = resized_spacing(spacing, original_shape, config.volume_size)
            affine = resized_affine(affine, original_shape, config.volume_size)
        names = self.LABELS.names_by_id()
        if config.view == "volume":
            sample = {
                "image": image.astype(np.float32),
                "label": label.astype(np.uint8),
                "case_id": case.case_id,
                "spacing": [float(s) for s in spacing],
                "affine": np.asarray(affine, dtype=np.float64),
                "original_shape": list(original_shape),
                "original_affine": np.asarray(reference.affine, dtype=np.float64),
                "label_names": names,
                **case.extra,
            }
            return [(case.case_id, sample)]
        pixels = self._slice_pixels(image)
        samples = []
        depth = label.shape[0]
        for d in range(depth):
            if not config.keep_empty_slices and not label[d].any():
                continue
            sample = {
                "image": encode_png(pixels[d]),
                "mask": encode_png(label[d]),
                "case_id": case.case_id,
                "spacing": [float(spacing[1]), float(spacing[2])],
                "label_names": names,
                "slice_index": d,
                "num_slices": depth,
                **case.extra,
            }
            samples.append((f"{case.case_id}/{d:04d}", sample))
        return samples
