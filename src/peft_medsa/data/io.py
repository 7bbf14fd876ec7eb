"""Reading medical images, masks and volumes, with errors that name the file and what was expected.

Conventions:
    - 2D images are returned as ``np.uint8`` arrays of shape ``(H, W, 3)`` (RGB); masks as integer arrays of shape
      ``(H, W)`` holding the raw stored values (the builders map them to label ids).
    - 3D volumes are returned as a `Volume` whose ``array`` has shape ``(D, H, W)``: for NIfTI, the file's voxel
      axes ``(i, j, k)`` become ``(W, H, D)``, i.e. ``array[d, h, w] == nifti_data[w, h, d]``. ``affine`` is the
      4x4 matrix mapping the homogeneous voxel index ``(w, h, d, 1)`` to world millimetres (RAS+, as in NIfTI), and
      ``spacing`` is ``(sz, sy, sx)`` in millimetres, in the array's axis order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .pixel_checks import check_finite_pixels, check_single_frame

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp")
"""File suffixes read by `read_image` and `read_mask` (case-insensitive)."""

LOSSY_SUFFIXES = (".jpg", ".jpeg")
"""Suffixes of lossy formats: masks stored this way hold intermediate values and must be thresholded."""

NIFTI_SUFFIXES = (".nii", ".nii.gz")
"""File suffixes read by `read_nifti` (case-insensitive)."""


class DataLayoutError(ValueError):
    """A file or folder does not have the layout or content that a reader or builder expects.

    The message always names the offending path and says what was expected.
    """


class MissingFileError(DataLayoutError, FileNotFoundError):
    """An expected file or folder does not exist (also a `FileNotFoundError`)."""


class UnreadableFileError(DataLayoutError):
    """A file exists but cannot be decoded (truncated, corrupt, or not the format its name says)."""


@dataclass
class Volume:
    """A 3D volume with its geometry.

    Attributes:
        array: ``(D, H, W)`` voxel values, in the file's dtype (HU for CT, raw intensities for MRI).
        affine: ``(4, 4)`` float64 matrix mapping ``(w, h, d, 1)`` voxel indices to world mm (RAS+).
        spacing: ``(sz, sy, sx)`` voxel size in mm, in the array's axis order.
        path: the file or folder the volume was read from.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    path: Path


def has_suffix(path: str | Path, suffixes: tuple[str, ...]) -> bool:
    """Whether ``path``'s name ends with one of ``suffixes`` (case-insensitive)."""
    name = Path(path).name.lower()
    return any(name.endswith(s) for s in suffixes)


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` names a 2D image file that `read_image` / `read_mask` read (by suffix)."""
    return has_suffix(path, IMAGE_SUFFIXES)


def is_nifti_file(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return has_suffix(path, NIFTI_SUFFIXES)


def file_stem(path: str | Path) -> str:
    """The file name without its (possibly double, ``.nii.gz``) suffix: ``img0001.nii.gz`` -> ``img0001``."""
    name = Path(path).name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    return Path(name).stem


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a `Path`, or raise `MissingFileError` saying which ``what`` was expected there."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: missing {what}")
    return path


def _open_pil(path: Path):
    from PIL import Image, UnidentifiedImageError

    require_file(path, "image file")
    try:
        pil = Image.open(path)
        pil.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadableFileError(
            f"{path}: cannot decode as an image ({type(err).__name__}: {err}); expected a complete "
            f"{'/'.join(s.lstrip('.').upper() for s in IMAGE_SUFFIXES)} file"
        ) from err
    check_single_frame(pil, path)
    return pil


def _rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float64)
    lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((array - lo) / (hi - lo) * 255.0).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2D image (PNG, JPEG, GIF, TIFF, BMP) as RGB.

    Grey images are replicated to three channels, palettes expanded, alpha dropped. 16-bit or float images
    (e.g. TIFF) are min-max rescaled to ``[0, 255]``.

    Args:
        path: the image file.

    Returns:
        ``(H, W, 3)`` ``np.uint8`` array.

    Raises:
        MissingFileError: the file does not exist.
        UnreadableFileError: the file cannot be decoded.
        DataLayoutError: several frames (animated GIF, multi-page TIFF), or NaN / inf pixels in a float image.
    """
    pil = _open_pil(Path(path))
    if pil.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        grey = _rescale_to_uint8(check_finite_pixels(np.asarray(pil), path))
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(pil.convert("RGB"), dtype=np.uint8)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a 2D mask file (PNG, JPEG, GIF, TIFF, BMP) as the raw values it stores.

    Grey-palette images give their grey values, coloured palettes their palette indices (class ids, as in
    PASCAL-style masks), bilevel images 0/255, and RGB(A) images whose channels agree (within the noise of JPEG)
    their first channel.

    Args:
        path: the mask file.

    Returns:
        ``(H, W)`` integer array (``np.uint8``, or a wider integer type for 16/32-bit masks).

    Raises:
        MissingFileError: the file does not exist.
        UnreadableFileError: the file cannot be decoded.
        DataLayoutError: a colour (RGB) mask, which has no single value per pixel.
    """
    path = Path(path)
    pil = _open_pil(path)
    if pil.mode == "P":
        palette = np.asarray(pil.getpalette() or [], dtype=np.int64).reshape(-1, 3)
        indices = np.asarray(pil)
        used = palette[np.unique(indices)] if len(palette) else palette
        if len(used) and np.all(used[:, 0] == used[:, 1]) and np.all(used[:, 1] == used[:, 2]):
            return np.asarray(pil.convert("L"))
        return indices.astype(np.uint8)
    if pil.mode == "1":
        return np.asarray(pil.convert("L"))
    if pil.mode in ("L", "I", "I;16", "I;16B", "I;16L"):
        array = np.asarray(pil)
        return array.astype(np.int32) if array.dtype.kind not in "ui" else array
    if pil.mode == "F":
        array = np.asarray(pil)
        if not np.all(array == np.round(array)):
            raise DataLayoutError(f"{path}: float mask with non-integer values; expected integer label values")
        return array.astype(np.int32)
    if pil.mode == "LA":
        return np.asarray(pil)[..., 0]
    rgb = np.asarray(pil.convert("RGB")).astype(np.int16)
    spread = int(np.abs(rgb - rgb[..., :1]).max())
    tolerance = 16 if has_suffix(path, LOSSY_SUFFIXES) else 0
    if spread > tolerance:
        raise DataLayoutError(
            f"{path}: colour mask (RGB channels differ by up to {spread}); expected a single-channel mask "
            "(grey values or palette indices)"
        )
    return rgb[..., 0].astype(np.uint8)


def _dhw_from_xyz(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataLayoutError(f"{path}: NIfTI data of shape {data.shape}; expected a 2D or 3D volume")
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0)))


def read_nifti(path: str | Path, *, canonical: bool = False) -> Volume:
    """Read a NIfTI file (``.nii`` / ``.nii.gz``) as a ``(D, H, W)`` volume with its affine and spacing.

    A 2D NIfTI (shape ``(X, Y)``) becomes a one-slice volume ``(1, Y, X)``; trailing singleton dimensions are
    dropped. Scaling (``scl_slope`` / ``scl_inter``) is applied as nibabel does.

    Args:
        path: the NIfTI file.
        canonical: reorient to the closest RAS+ orientation first (``nibabel.as_closest_canonical``), so that
            ``w`` runs left to right, ``h`` posterior to anterior and ``d`` inferior to superior.

    Returns:
        A `Volume` with ``array`` ``(D, H, W)`` in the stored dtype (after scaling), ``affine`` mapping
        ``(w, h, d, 1)`` to world mm, ``spacing`` ``(sz, sy, sx)``.

    Raises:
        MissingFileError: the file does not exist.
        UnreadableFileError: the file is truncated, corrupt or not NIfTI.
        DataLayoutError: NaN or infinite voxels (which would turn any normalisation into a constant).
    """
    import nibabel as nib

    path = require_file(path, "NIfTI file")
    try:
        image = nib.load(str(path))
        if canonical:
            image = nib.as_closest_canonical(image)
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel and gzip raise many types (EOFError, zlib.error, ImageFileError, ...)
        raise UnreadableFileError(
            f"{path}: cannot read as NIfTI ({type(err).__name__}: {err}); expected a complete .nii or .nii.gz file"
        ) from err
    zooms = [float(z) for z in image.header.get_zooms()[:3]] + [1.0] * 3
    return Volume(
        array=_dhw_from_xyz(check_finite_pixels(np.asarray(data), path), path),
        affine=np.asarray(image.affine, dtype=np.float64),
        spacing=(zooms[2], zooms[1], zooms[0]),
        path=path,
    )


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a ``(D, H, W)`` array (e.g. a predicted label map) as NIfTI, undoing `read_nifti`'s axis order.

    Args:
        path: the output file (``.nii`` or ``.nii.gz``).
        array: ``(D, H, W)`` values.
        affine: ``(4, 4)`` matrix mapping ``(w, h, d, 1)`` to world mm, as returned by `read_nifti`.

    Returns:
        The written path.
    """
    import nibabel as nib

    path = Path(path)
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"array has shape {array.shape}; expected (D, H, W)")
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.transpose(array, (2, 1, 0))), np.asarray(affine)), str(path))
    return path


def _read_dicom_header(file: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(file))
    except (InvalidDicomError, OSError, EOFError, ValueError) as err:
        raise UnreadableFileError(
            f"{file}: cannot read as DICOM ({type(err).__name__}: {err}); expected every file of the series folder "
            "to be a DICOM slice"
        ) from err


def _dicom_attr(ds, name: str, file: Path):
    value = ds.get(name)
    if value is None:
        raise DataLayoutError(f"{file}: DICOM slice without {name}; expected a tomographic series (CT/MR)")
    return value


def read_dicom_series(folder: str | Path) -> Volume:
    """Read a folder holding one DICOM series (one file per slice) as a ``(D, H, W)`` volume.

    Slices are sorted by their ImagePositionPatient projected on the slice normal (the cross product of the two
    ImageOrientationPatient directions), so file names and InstanceNumber do not matter. RescaleSlope /
    RescaleIntercept are applied (CT in HU). The DICOM patient frame (LPS) is converted to RAS+ so that the affine
    follows the same convention as `read_nifti`.

    Args:
        folder: the series folder. Hidden files and ``DICOMDIR`` are ignored; any other file must be a DICOM slice
            of the same series.

    Returns:
        A `Volume` with ``array`` ``(D, H, W)`` float32 (``D`` slices of ``Rows x Columns``), ``affine`` mapping
        ``(w, h, d, 1)`` (column, row, slice) to RAS+ mm, ``spacing`` ``(sz, sy, sx)`` with ``sz`` the median
        distance between consecutive slice positions.

    Raises:
        MissingFileError: the folder does not exist or holds no file.
        UnreadableFileError: a file is not DICOM or its pixels cannot be decoded.
        DataLayoutError: the files mix series, orientations or slice sizes, lack geometry, two slices share a
            position, or slices are missing (a gap over 1.5x the median slice distance).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: missing DICOM series folder")
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".") and f.name != "DICOMDIR")
    if not files:
        raise MissingFileError(f"{folder}: empty folder; expected the DICOM files of one series")
    slices = [(f, _read_dicom_header(f)) for f in files]
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise DataLayoutError(f"{folder}: files of {len(series)} series ({sorted(series)}); expected one series")
    first_file, first = slices[0]
    orientation = np.asarray(_dicom_attr(first, "ImageOrientationPatient", first_file), dtype=np.float64)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    positions = []
    for file, ds in slices:
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise DataLayoutError(
                f"{file}: slice of {ds.Rows}x{ds.Columns} pixels; expected {first.Rows}x{first.Columns} as in "
                f"{first_file.name}"
            )
        other = np.asarray(_dicom_attr(ds, "ImageOrientationPatient", file), dtype=np.float64)
        if other.shape != orientation.shape or not np.allclose(other, orientation, atol=1e-3):
            raise DataLayoutError(
                f"{file}: ImageOrientationPatient {other.tolist()} differs from {orientation.tolist()} of "
                f"{first_file.name}; expected one orientation for the whole series"
            )
        positions.append(np.asarray(_dicom_attr(ds, "ImagePositionPatient", file), dtype=np.float64))
    order = np.argsort([float(p @ normal) for p in positions], kind="stable")
    offsets = np.asarray([float(positions[i] @ normal) for i in order])
    gaps = np.diff(offsets)
    if len(gaps) and np.min(gaps) < 1e-4:
        i = int(np.argmin(gaps))
        raise DataLayoutError(
            f"{folder}: slices {slices[order[i]][0].name} and {slices[order[i + 1]][0].name} share one position; "
            "expected one slice per position"
        )
    if len(gaps) > 1 and np.max(gaps) > 1.5 * float(np.median(gaps)):
        i = int(np.argmax(gaps))
        raise DataLayoutError(
            f"{folder}: {gaps[i]:.2f} mm between slices {slices[order[i]][0].name} and "
            f"{slices[order[i + 1]][0].name}, {gaps[i] / np.median(gaps):.1f}x the usual {np.median(gaps):.2f} mm: "
            "slices are missing; expected a complete series"
        )
    if len(gaps) and np.ptp(gaps) > 0.01 * max(float(np.median(gaps)), 1e-6) + 1e-3:
        warnings.warn(f"{folder}: uneven slice gaps ({gaps.min():.3f}-{gaps.max():.3f} mm)", stacklevel=2)
    planes = []
    for i in order:
        file, ds = slices[i]
        try:
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as err:  # pydicom raises per missing decoder / broken data
            raise UnreadableFileError(f"{file}: cannot decode DICOM pixels ({type(err).__name__}: {err})") from err
        slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
        planes.append(pixels * slope + intercept)
    dy, dx = (float(v) for v in _dicom_attr(first, "PixelSpacing", first_file))
    dz = float(np.median(gaps)) if len(gaps) else float(first.get("SliceThickness", 1.0) or 1.0)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * dx  # w (column index) moves along the row direction
    affine_lps[:3, 1] = col_dir * dy  # h (row index) moves along the column direction
    affine_lps[:3, 2] = normal * dz
    affine_lps[:3, 3] = positions[order[0]]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    return Volume(array=np.stack(planes), affine=affine, spacing=(dz, dy, dx), path=folder)


def read_volume(path: str | Path, *, canonical: bool = False) -> Volume:
    """Read a NIfTI file or a DICOM series folder (see `read_nifti`, `read_dicom_series`).

    ``canonical`` applies to NIfTI files only (DICOM series are already returned in RAS+ world coordinates).
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path)
    if not is_nifti_file(path):
        raise DataLayoutError(f"{path}: unsupported volume format; expected a .nii/.nii.gz file or a DICOM folder")
    return read_nifti(path, canonical=canonical)
