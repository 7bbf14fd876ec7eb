"""Volumes on disk: NIfTI / DICOM in (with their geometry), a label volume out in the same geometry.

Axes (as :mod:`peft_medsa.data.io`): a volume is ``(D, H, W)``; slice ``z`` is ``array[z]``. NIfTI voxel ``(i, j, k)``
is ``(w, h, d)``. The label volume written back keeps the input's geometry: a NIfTI input's affine and header
(qform / sform codes, pixdim, units), a DICOM series' affine computed from ImagePositionPatient,
ImageOrientationPatient, PixelSpacing and the slice positions (LPS converted to RAS+) - never an identity affine.
Writes are atomic (:func:`peft_medsa.atomic.atomic_write`).

Prompts for volumes are in :mod:`peft_medsa.inference.volume_prompts`; prediction in
:mod:`peft_medsa.inference.volume_predictor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..data.io import DataLayoutError, Volume, is_nifti_file, read_dicom_series, read_nifti, require_file
from .volume_prompts import box3d_prompts

__all__ = [
    "LoadedVolume",
    "box3d_prompts",
    "load_volume",
    "save_label_volume",
    "volume_to_uint8",
]


@dataclass
class LoadedVolume:
    """A volume with what is needed to write results in its geometry.

    Attributes:
        volume: the `Volume` (``array`` ``(D, H, W)``, ``affine`` for ``(w, h, d, 1)`` -> RAS+ mm, ``spacing``).
        header: the NIfTI header of a NIfTI input (``None`` for DICOM).
        source: ``"nifti"`` or ``"dicom"``.
    """

    volume: Volume
    header: Any
    source: str

    @property
    def array(self) -> np.ndarray:
        """``(D, H, W)`` voxel values."""
        return self.volume.array

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` voxel ``(w, h, d, 1)`` -> RAS+ mm."""
        return self.volume.affine


def load_volume(path: str | Path) -> LoadedVolume:
    """Reads a NIfTI file (``.nii`` / ``.nii.gz``, 3D) or a DICOM series folder.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a 4D NIfTI, a folder mixing series, a file of another format, or an unreadable file (the message
            names the path and what was expected).
    """
    path = Path(path)
    if path.is_dir():
        return LoadedVolume(read_dicom_series(path), None, "dicom")
    require_file(path, "volume (.nii/.nii.gz file or DICOM series folder)")
    if not is_nifti_file(path):
        raise DataLayoutError(f"{path}: not a volume; expected a .nii/.nii.gz file or a DICOM series folder")
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
    except Exception as err:  # nibabel raises many types for broken files
        raise DataLayoutError(f"{path}: cannot read as NIfTI ({type(err).__name__}: {err})") from err
    shape = tuple(int(s) for s in header.get_data_shape())
    if len(shape) > 3 and any(s > 1 for s in shape[3:]):
        raise DataLayoutError(
            f"{path}: 4D NIfTI of shape {shape}; expected a 3D volume (select one time point / channel first)"
        )
    return LoadedVolume(read_nifti(path), header, "nifti")


def _atomic_nifti_save(image: Any, path: Path) -> Path:
    import nibabel as nib

    return atomic_write(path, lambda temporary: nib.save(image, str(temporary)))


def save_label_volume(path: str | Path, labels: np.ndarray, reference: LoadedVolume) -> Path:
    """Writes a ``(D, H, W)`` label volume as NIfTI in the geometry of ``reference`` (atomically: temp + rename).

    A NIfTI reference gives its affine and a copy of its header (qform / sform and their codes, pixdim, units); the
    data type becomes uint8 (or int16 above 255) with no intensity scaling. A DICOM reference gives its computed
    affine, stored as sform and qform with code 1 (scanner).

    Raises:
        ValueError: ``path`` is not ``.nii`` / ``.nii.gz``, or ``labels`` does not have the reference's shape.
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_file(path):
        raise ValueError(f"output {path}: a label volume is written as NIfTI; expected a .nii or .nii.gz path")
    labels = np.asarray(labels)
    if labels.shape != reference.array.shape:
        raise ValueError(f"labels of shape {labels.shape}; expected the volume's shape {reference.array.shape}")
    dtype = np.uint8 if labels.size == 0 or int(labels.max()) <= 255 else np.int16
    data = np.ascontiguousarray(np.transpose(labels.astype(dtype), (2, 1, 0)))  # (D, H, W) -> (W, H, D)
    if reference.header is not None:
        header = reference.header.copy()
        header.set_data_dtype(dtype)
        image = nib.Nifti1Image(data, reference.affine, header=header)
        image.header.set_slope_inter(1.0, 0.0)
        image.set_qform(reference.header.get_qform(), code=int(reference.header["qform_code"]))
        image.set_sform(reference.header.get_sform(), code=int(reference.header["sform_code"]))
    else:
        image = nib.Nifti1Image(data, reference.affine)
        image.set_qform(reference.affine, code=1)
        image.set_sform(reference.affine, code=1)
    return _atomic_nifti_save(image, path)


def volume_to_uint8(array: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """``(D, H, W)`` intensities -> uint8 slices for 2D SAM, one mapping for the whole volume.

    Args:
        array: voxel values (HU for CT, raw MRI intensities).
        window: ``(level, width)``, e.g. ``(40, 400)`` for abdominal CT; ``None``: the 0.5-99.5 percentiles of the
            volume map to 0-255.
    """
    values = np.asarray(array, dtype=np.float32)
    if window is not None:
        level, width = window
        low, high = level - width / 2.0, level + width / 2.0
    else:
        low, high = (float(v) for v in np.percentile(values, (0.5, 99.5)))
    scaled = (np.clip(values, low, high) - low) / max(high - low, 1e-8)
    return np.round(scaled * 255.0).astype(np.uint8)
