"""Whole volumes for users: NIfTI / DICOM in, per-slice 2D prediction with prompts, NIfTI label volume out.

Axes and coordinates (as :mod:`peft_medsa.data.io`): a volume is ``(D, H, W)``; slice ``z`` is ``array[z]``; a
point on it is ``(x, y)`` = (column ``w``, row ``h``) and a box is XYXY in those pixels. NIfTI voxel ``(i, j, k)``
is ``(w, h, d)``. The label volume written back keeps the input's geometry: a NIfTI input's affine and header
(qform / sform codes, pixdim, units), a DICOM series' affine computed from ImagePositionPatient,
ImageOrientationPatient, PixelSpacing and the slice positions (LPS converted to RAS+) - never an identity affine.

Prompts for a volume (:func:`segment_volume_2d`):
    - explicit per-slice prompts ``{z: Prompt}``;
    - a 3D box ``(x0, y0, z0, x1, y1, z1)``: the 2D box ``(x0, y0, x1, y1)`` on every slice ``z0..z1``
      (:func:`box3d_prompts`);
    - a few clicks on some slices, carried to the other slices by propagation: the mask predicted on a prompted
      slice gives its tight box (grown by ``margin`` pixels) as the prompt of the next slice outwards (``z + 1``
      upwards, ``z - 1`` downwards), and so on until the mask vanishes (fewer than ``min_area`` pixels), the volume
      ends or a slice that has its own prompt / prediction is reached.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import DataLayoutError, Volume, is_nifti_file, read_dicom_series, read_nifti, require_file
from ..prompts import Prompt

__all__ = [
    "LoadedVolume",
    "box3d_prompts",
    "load_volume",
    "save_label_volume",
    "segment_volume_2d",
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

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")  # same suffix: nibabel picks the format
    try:
        nib.save(image, str(temporary))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


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


def box3d_prompts(box3d: Any, shape: tuple[int, int, int]) -> dict[int, Prompt]:
    """The 2D box ``(x0, y0, x1, y1)`` on every slice ``z0..z1`` (inclusive) of a ``(D, H, W)`` volume.

    Raises:
        ValueError: not 6 numbers, ``x1 < x0`` (or ``y``, ``z``), or outside the volume (names the bound).
    """
    box = np.asarray(box3d, dtype=np.float64).reshape(-1)
    if box.shape != (6,):
        raise ValueError(f"3D box {box.tolist()} is not 6 numbers; expected (x0, y0, z0, x1, y1, z1)")
    x0, y0, z0, x1, y1, z1 = box
    depth, height, width = shape
    if x1 < x0 or y1 < y0 or z1 < z0:
        raise ValueError(f"3D box {box.tolist()} has a max below its min; expected x0 <= x1, y0 <= y1, z0 <= z1")
    if x0 < 0 or y0 < 0 or z0 < 0 or x1 > width or y1 > height or z1 > depth - 1:
        raise ValueError(
            f"3D box {box.tolist()} outside the volume; expected 0 <= x <= {width}, 0 <= y <= {height}, "
            f"0 <= z <= {depth - 1} (volume (D, H, W) = {shape})"
        )
    return {z: Prompt(box=[x0, y0, x1, y1]) for z in range(int(z0), int(z1) + 1)}


def _grown_box(mask: np.ndarray, margin: float) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return np.array(
        [
            max(cols.min() - margin, 0),
            max(rows.min() - margin, 0),
            min(cols.max() + margin, width - 1),
            min(rows.max() + margin, height - 1),
        ],
        dtype=np.float64,
    )


def segment_volume_2d(
    predictor: Any,
    slices: np.ndarray,
    prompts: dict[int, Prompt],
    *,
    propagate: bool = False,
    margin: float = 2.0,
    min_area: int = 1,
    progress: Any = None,
) -> np.ndarray:
    """Slice-by-slice segmentation of one object with a 2D predictor (``set_image`` / ``predict``).

    Args:
        predictor: a :class:`~peft_medsa.inference.predictor.MedSAPredictor` (or any object with
            ``set_image(image)`` and ``predict(point_coords, point_labels, box) -> (masks (1, H, W), ...)``).
        slices: ``(D, H, W)`` images (e.g. :func:`volume_to_uint8`).
        prompts: ``{z: Prompt}`` in the slice's ``(x, y)`` pixels.
        propagate: carry the prompted slices' masks to their neighbours (module docstring).
        margin: pixels added around a mask's tight box when it becomes the next slice's box.
        min_area: a propagated mask smaller than this ends the propagation (and is dropped).
        progress: optional callable ``progress(n)`` called once per predicted slice (e.g. ``tqdm.update``).

    Returns:
        ``(D, H, W)`` bool mask.

    Raises:
        ValueError: a prompt on a slice outside ``0..D-1``.
    """
    slices = np.asarray(slices)
    depth = len(slices)
    bad = sorted(z for z in prompts if not 0 <= z < depth)
    if bad:
        raise ValueError(f"prompts on slices {bad}; the volume has slices 0..{depth - 1}")
    result = np.zeros(slices.shape, dtype=bool)
    done: set[int] = set()

    def predict(z: int, prompt: Prompt) -> np.ndarray:
        predictor.set_image(slices[z])
        masks = predictor.predict(
            point_coords=prompt.points if prompt.num_points else None,
            point_labels=prompt.labels if prompt.num_points else None,
            box=prompt.box,
        )[0]
        done.add(z)
        if progress is not None:
            progress(1)
        return np.asarray(masks[0], dtype=bool)

    for z in sorted(prompts):
        result[z] = predict(z, prompts[z])
    if propagate:
        for z in sorted(prompts):
            for step in (1, -1):
                current, mask = z + step, result[z]
                while 0 <= current < depth and current not in done and mask.sum() >= max(min_area, 1):
                    mask = predict(current, Prompt(box=_grown_box(mask, margin)))
                    if mask.sum() < max(min_area, 1):
                        break
                    result[current] = mask
                    current += step
    return result


def boxes_from_masks(masks: np.ndarray) -> dict[int, Prompt]:
    """``{z: Prompt(box=tight XYXY box of masks[z])}`` for every non-empty slice of a ``(D, H, W)`` mask."""
    return {int(z): Prompt(box=_grown_box(masks[z], 0)) for z in np.flatnonzero(masks.reshape(len(masks), -1).any(1))}


def segment_volume_sd_trans(model: Any, slices: np.ndarray, prompts: dict[int, Prompt]) -> np.ndarray:
    """Box prompts ``{z: Prompt(box=...)}`` on a ``(D, H, W)`` volume through an SD-Trans model, all slices together.

    Uses :func:`peft_medsa.inference.volume.segment_volume` (the SD-Trans developer's chunked ``num_slices`` forward);
    slices without a prompt are absent (NaN box). Click prompts are first turned into boxes by 2D propagation
    (:func:`segment_volume_2d` then :func:`boxes_from_masks`) by the caller.

    Returns:
        ``(D, H, W)`` bool mask.
    """
    from .volume import segment_volume

    if any(p.box is None for p in prompts.values()):
        raise ValueError("segment_volume_sd_trans takes box prompts only; turn clicks into boxes first")
    boxes = np.full((len(slices), 4), np.nan)
    for z, prompt in prompts.items():
        boxes[z] = prompt.box
    return np.asarray(segment_volume(model, slices, boxes=boxes)) > 0
