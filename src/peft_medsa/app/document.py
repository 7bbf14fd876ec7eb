"""What the user opened: a 2D image (PNG, JPEG, GIF, TIFF, BMP, one DICOM file) or a volume (NIfTI, a zipped DICOM
series), with the slices shown to the model and to the user.

A volume's axes are ``(D, H, W)`` = (slice, row, column) as in :mod:`peft_medsa.data.io`; slice ``z`` of a NIfTI is
its voxels ``[:, :, z]``. Raw intensities (CT in HU, MRI, 16-bit DICOM) are mapped to uint8 with a window preset.
"""

from __future__ import annotations

import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.io import is_image_file, is_nifti_file
from .backend import LoadedVolume, UserError, load_volume, to_display_uint8, volume_to_uint8

__all__ = ["WINDOWS", "Document", "open_document"]

WINDOWS: dict[str, tuple[float, float] | None] = {
    "MRI / auto (0.5-99.5 %)": None,
    "CT soft tissue (40 / 400)": (40.0, 400.0),
    "CT bone (400 / 1800)": (400.0, 1800.0),
}
"""Window presets: name -> ``(level, width)`` in the file's units (HU for CT); ``None``: volume percentiles."""


@dataclass
class Document:
    """An opened image or volume.

    Attributes:
        name: the uploaded file's name.
        raw: ``(D, H, W)`` intensities, or ``(1, H, W, 3)`` uint8 for a colour / 8-bit image (no window applies).
        volume: the `LoadedVolume` (affine, header) of a NIfTI or DICOM-series upload, else ``None``.
        key: unique id of this upload (embedding cache key).
    """

    name: str
    raw: np.ndarray
    volume: LoadedVolume | None = None
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    _windowed: dict = field(default_factory=dict, repr=False)

    @property
    def is_volume(self) -> bool:
        """Whether the mask is exported as NIfTI (a volume upload)."""
        return self.volume is not None

    @property
    def depth(self) -> int:
        """Number of slices ``D`` (1 for a 2D image)."""
        return int(self.raw.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of a slice."""
        return int(self.raw.shape[1]), int(self.raw.shape[2])

    @property
    def needs_window(self) -> bool:
        """Whether the intensities are raw (volumes, grey DICOM) so that a window preset applies."""
        return self.raw.ndim == 3

    def slice_image(self, z: int, window: str) -> np.ndarray:
        """Slice ``z`` as uint8 ``(H, W)`` (windowed) or ``(H, W, 3)``: what the model and the user see."""
        if not 0 <= z < self.depth:
            raise UserError(f"slice {z} outside the volume; expected 0..{self.depth - 1}")
        if not self.needs_window:
            return self.raw[z]
        if window not in WINDOWS:
            raise UserError(f"window {window!r}; expected one of {list(WINDOWS)}")
        if window not in self._windowed:  # one mapping for the whole volume, computed once per preset
            self._windowed[window] = volume_to_uint8(self.raw, WINDOWS[window])
        return self._windowed[window][z]


def _read_dicom_file(path: Path) -> np.ndarray:
    import pydicom

    try:
        dataset = pydicom.dcmread(str(path))
        pixels = dataset.pixel_array.astype(np.float32)
    except Exception as err:  # pydicom raises many types for broken or non-DICOM files
        raise UserError(f"{path.name}: cannot read as DICOM ({type(err).__name__}: {err})") from None
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # colour (ultrasound, photographs)
        return to_display_uint8(pixels)[None]
    if pixels.ndim != 2:
        raise UserError(f"{path.name}: DICOM pixels of shape {pixels.shape}; expected one 2D frame")
    slope, intercept = float(dataset.get("RescaleSlope", 1.0)), float(dataset.get("RescaleIntercept", 0.0))
    return (pixels * slope + intercept)[None]


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def _open_zip(path: Path) -> LoadedVolume:
    folder = Path(tempfile.mkdtemp(prefix="peft-medsa-app-"))
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir() and not Path(m.filename).name.startswith(".")]
            if not members:
                raise UserError(f"{path.name}: empty zip; expected the DICOM files of one series")
            for i, member in enumerate(members):  # flattened, names made unique; never outside `folder`
                (folder / f"{i:05d}_{Path(member.filename).name}").write_bytes(archive.read(member))
    except zipfile.BadZipFile as err:
        raise UserError(f"{path.name}: not a readable zip ({err})") from None
    return load_volume(folder)


def open_document(path: str | Path, name: str | None = None) -> Document:
    """Reads an uploaded file by its name: ``.nii`` / ``.nii.gz`` and ``.zip`` (DICOM series) are volumes, ``.dcm``
    (or a file with the DICOM preamble) one DICOM image, PNG / JPEG / GIF / TIFF / BMP images.

    Raises:
        UserError: an unsupported or unreadable file (the message names it and what was expected).
    """
    path = Path(path)
    name = name or path.name
    try:
        if is_nifti_file(name):
            loaded = load_volume(path)
            return Document(name, np.asarray(loaded.array, dtype=np.float32), loaded)
        if name.lower().endswith(".zip"):
            loaded = _open_zip(path)
            return Document(name, np.asarray(loaded.array, dtype=np.float32), loaded)
        if _is_dicom(path):
            return Document(name, _read_dicom_file(path))
        if is_image_file(name):
            from ..data.io import read_image

            return Document(name, read_image(path)[None])
    except UserError:
        raise
    except (ValueError, OSError, EOFError) as err:  # the readers' errors name the file and what was expected
        message = " ".join(str(err).split()).replace(str(path), name)
        raise UserError(f"{name}: cannot open ({message})") from None
    raise UserError(
        f"{name}: unsupported file; expected an image (PNG, JPEG, GIF, TIFF, BMP, DICOM .dcm) or a volume "
        "(.nii, .nii.gz, or a .zip of one DICOM series)"
    )
