"""The `datasets.Features` of the sample schema (see `peft_medsa.data`) and the encoders that fill them.

2D samples and slices of 3D sets store ``image`` and ``mask`` as lossless images (`datasets.Image`): ``image``
decodes to RGB, ``mask`` to its single-channel label map. Volumes store nested float32 / uint8 lists of any
``(D, H, W)`` shape; read them with the ``numpy`` format (`numpy_format`) to get arrays without copies per value.
"""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np

from ..io import IMAGE_SUFFIXES, has_suffix

ARRAY_COLUMNS = ("image", "mask", "label", "affine", "original_affine", "disc", "cup")
"""Columns returned as numpy arrays by `numpy_format`."""

_NATIVE_MODES = ("RGB", "L", "P", "RGBA", "LA", "1")


def _float_list() -> datasets.List:
    return datasets.List(datasets.Value("float32"))


def _nested(dtype: str, depth: int):
    feature = datasets.Value(dtype)
    for _ in range(depth):
        feature = datasets.List(feature)
    return feature


def image_features(extra: dict | None = None) -> datasets.Features:
    """Features of a 2D sample: ``image``, ``mask``, ``case_id``, ``spacing`` ``(sy, sx)``, ``label_names``."""
    features = {
        "image": datasets.Image(mode="RGB"),
        "mask": datasets.Image(),
        "case_id": datasets.Value("string"),
        "spacing": _float_list(),
        "label_names": datasets.List(datasets.Value("string")),
    }
    return datasets.Features({**features, **(extra or {})})


def slice_features(extra: dict | None = None) -> datasets.Features:
    """Features of one slice of a 3D set: the 2D features plus ``slice_index`` and ``num_slices``."""
    slices = {"slice_index": datasets.Value("int32"), "num_slices": datasets.Value("int32")}
    return image_features({**slices, **(extra or {})})


def volume_features(channels: bool = False, extra: dict | None = None) -> datasets.Features:
    """Features of a 3D sample.

    Args:
        channels: the image has a leading channel axis ``(C, D, H, W)`` (multi-modal MRI) instead of ``(D, H, W)``.
        extra: more features (e.g. ``modalities``).
    """
    features = {
        "image": _nested("float32", 4 if channels else 3),
        "label": _nested("uint8", 3),
        "case_id": datasets.Value("string"),
        "spacing": _float_list(),
        "affine": _nested("float64", 2),
        "original_shape": datasets.List(datasets.Value("int32")),
        "original_affine": _nested("float64", 2),
        "label_names": datasets.List(datasets.Value("string")),
    }
    return datasets.Features({**features, **(extra or {})})


def encode_png(array: np.ndarray) -> dict:
    """Encode an ``(H, W)`` or ``(H, W, 3)`` ``np.uint8`` array as PNG bytes for a `datasets.Image` column."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def encode_image_file(path: Path, rgb: np.ndarray) -> dict:
    """Encode a 2D image for the ``image`` column, keeping the original file's bytes when they decode to ``rgb``.

    The original bytes (e.g. JPEG) are kept when `datasets.Image(mode="RGB")` decodes them to the same pixels as
    `peft_medsa.data.io.read_image` (8-bit modes, no EXIF rotation); otherwise ``rgb`` is stored as PNG.

    Args:
        path: the image file that ``rgb`` was read from.
        rgb: ``(H, W, 3)`` ``np.uint8`` pixels of that file.
    """
    from PIL import Image

    if has_suffix(path, IMAGE_SUFFIXES):
        with Image.open(path) as pil:
            orientation = pil.getexif().get(0x0112, 1)
            if pil.mode in _NATIVE_MODES and orientation in (None, 1):
                return {"bytes": path.read_bytes(), "path": None}
    return encode_png(rgb)


def numpy_format(dataset: datasets.Dataset | datasets.DatasetDict):
    """Return ``dataset`` formatted so that array columns (`ARRAY_COLUMNS`) are numpy arrays, others Python.

    Images decode to ``(H, W, 3)`` uint8, masks to ``(H, W)`` uint8, volumes keep their stored dtypes.
    """
    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict({name: numpy_format(split) for name, split in dataset.items()})
    columns = [c for c in ARRAY_COLUMNS if c in dataset.column_names]
    # dtype=None keeps the stored dtypes (uint8 labels, float64 affines) instead of numpy's int64 / float32 defaults
    return dataset.with_format("numpy", columns=columns, output_all_columns=True, dtype=None)
