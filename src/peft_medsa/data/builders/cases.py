"""Cases found on disk, how mask values become label ids, and loading of 2D image / mask pairs.

A `Case` is what a builder's layout reader finds: paths, plus a ``problem`` when the layout is incomplete for that
case (an image without its mask, a mask without its image). Problems are raised when the case is loaded, so that
``on_bad_case`` decides in one place whether they stop the build or are skipped with a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import LOSSY_SUFFIXES, DataLayoutError, MissingFileError, file_stem, has_suffix, read_image, read_mask
from ..labels import LabelSpec


@dataclass
class Case:
    """One case found on disk.

    Attributes:
        case_id: identifier, unique within the builder (used as the ``case_id`` column).
        image: image file (2D) or main volume file (3D); None when missing.
        mask: mask / label file; None when missing.
        files: more named files (e.g. the MRI modalities of BraTS: ``{"flair": path, ...}``).
        extra: more columns of the sample (e.g. ``{"source": "ddti"}``).
        problem: why the case cannot be loaded (a message naming the file and what was expected), or None.
    """

    case_id: str
    image: Path | None = None
    mask: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    problem: str | None = None

    def check(self) -> None:
        """Raise `MissingFileError` with `problem` if the case is incomplete."""
        if self.problem:
            raise MissingFileError(self.problem)


def list_files(folder: Path, accept, what: str) -> list[Path]:
    """Sorted files of ``folder`` for which ``accept(path)`` holds; hidden files are ignored.

    Raises:
        MissingFileError: ``folder`` does not exist.
        DataLayoutError: no accepted file in ``folder`` (an empty folder).
    """
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: missing folder; expected a folder of {what}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and accept(p))
    if not files:
        raise DataLayoutError(f"{folder}: no {what} found (empty folder or wrong layout)")
    return files


def pair_files(
    images: Iterable[Path],
    masks: Iterable[Path],
    *,
    image_key=file_stem,
    mask_key=file_stem,
    images_dir: Path,
    masks_dir: Path,
    case_id=None,
    extra: dict | None = None,
) -> list[Case]:
    """Pair images with masks by a key (the file stem by default); unpaired files become cases with a problem.

    Args:
        images: image files.
        masks: mask files.
        image_key: image path -> pairing key.
        mask_key: mask path -> pairing key (e.g. strip a ``_segmentation`` suffix).
        images_dir: folder named in the messages for a missing image.
        masks_dir: folder named in the messages for a missing mask.
        case_id: key -> case id (default: the key).
        extra: extra columns for every case.

    Returns:
        Cases sorted by key.

    Raises:
        DataLayoutError: two files of one folder have the same key.
    """
    by_key: dict[str, list[Path | None]] = {}
    for slot, files, key_fn in ((0, images, image_key), (1, masks, mask_key)):
        for path in files:
            entry = by_key.setdefault(key_fn(path), [None, None])
            if entry[slot] is not None:
                raise DataLayoutError(f"{path}: same case key as {entry[slot].name}; expected one file per case")
            entry[slot] = path
    cases = []
    for key in sorted(by_key):
        image, mask = by_key[key]
        problem = None
        if mask is None:
            problem = f"{image}: image without a mask; expected a mask for case {key!r} in {masks_dir}"
        elif image is None:
            problem = f"{mask}: mask without an image; expected an image for case {key!r} in {images_dir}"
        cid = case_id(key) if case_id else key
        cases.append(Case(case_id=cid, image=image, mask=mask, extra=dict(extra or {}), problem=problem))
    return cases


@dataclass(frozen=True)
class MaskCoding:
    """How the values stored in a mask file become label ids.

    Attributes:
        values: stored value -> label id, all other values rejected. None means a binary mask: stored values must
            be 0/255 or 0/1 (lossless files), and lossy (JPEG) masks are thresholded at ``threshold``.
        threshold: when set with ``values=None``, any mask becomes ``stored > threshold`` (for masks resized or
            saved lossily). Default for JPEG masks: 127.
        names: label names for the messages, indexed by id.
    """

    values: tuple[tuple[int, int], ...] | None = None
    threshold: int | None = None
    names: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, mapping: Mapping[int, int], spec: LabelSpec) -> MaskCoding:
        """A strict coding from a stored value -> id mapping, checked against ``spec``'s ids."""
        unknown = set(mapping.values()) - set(spec.ids)
        if unknown:
            raise ValueError(f"mask values map to ids {sorted(unknown)} that {spec.name!r} does not declare")
        return cls(values=tuple(sorted(mapping.items())), names=tuple(spec.names_by_id()))

    @classmethod
    def identity(cls, spec: LabelSpec) -> MaskCoding:
        """A strict coding where stored values are the ids of ``spec``."""
        return cls.from_mapping({i: i for i in spec.ids}, spec)

    def describe(self) -> str:
        """The accepted stored values, for error messages."""
        if self.values is None:
            return "binary values 0/255 or 0/1 (set mask_threshold to binarise other values)"
        pairs = ", ".join(
            f"{v} ({self.names[i] if i < len(self.names) and self.names[i] else f'id {i}'})" for v, i in self.values
        )
        return f"values {pairs}"

    def decode(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Map stored values to ids.

        Args:
            raw: ``(H, W)`` or ``(D, H, W)`` stored values (integer, or float holding integers).
            path: the file, for messages.

        Returns:
            ``np.uint8`` label map of ``raw``'s shape.

        Raises:
            DataLayoutError: values outside the declared ones, or non-integer values.
        """
        raw = np.asarray(raw)
        if raw.dtype.kind == "f":
            if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
                raise DataLayoutError(f"{path}: mask holds non-integer values; expected {self.describe()}")
        if self.values is None:
            threshold = self.threshold
            if threshold is None and has_suffix(path, LOSSY_SUFFIXES):
                threshold = 127
            if threshold is not None:
                return (raw > threshold).astype(np.uint8)
        present = np.unique(raw).astype(np.int64)
        if self.values is None:
            for allowed in ((0, 255), (0, 1)):
                if set(present.tolist()) <= set(allowed):
                    return (raw == allowed[1]).astype(np.uint8)
            unexpected = present[~np.isin(present, (0, 1, 255))]
            unexpected = unexpected if len(unexpected) else present
        else:
            lookup = dict(self.values)
            unexpected = present[~np.isin(present, list(lookup))]
            if not len(unexpected):
                out = np.zeros(raw.shape, dtype=np.uint8)
                for value in present.tolist():
                    out[raw == value] = lookup[value]
                return out
        shown = ", ".join(str(v) for v in unexpected[:8].tolist()) + (", ..." if len(unexpected) > 8 else "")
        raise DataLayoutError(
            f"{path}: mask values {{{shown}}} outside the declared labels; expected {self.describe()}"
        )


def load_pair(case: Case, coding: MaskCoding) -> tuple[np.ndarray, np.ndarray]:
    """Read and check a 2D case.

    Returns:
        ``(H, W, 3)`` ``np.uint8`` image and ``(H, W)`` ``np.uint8`` label map.

    Raises:
        MissingFileError: the image or mask is missing.
        UnreadableFileError: a file cannot be decoded.
        DataLayoutError: mask and image sizes differ, or mask values are outside the declared labels.
    """
    case.check()
    image = read_image(case.image)
    raw = read_mask(case.mask)
    if raw.shape != image.shape[:2]:
        raise DataLayoutError(
            f"{case.mask}: mask of {raw.shape[1]}x{raw.shape[0]} pixels (WxH); expected the size of its image "
            f"{case.image.name}, {image.shape[1]}x{image.shape[0]}"
        )
    return image, coding.decode(raw, case.mask)
