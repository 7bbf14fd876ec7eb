"""Medical segmentation data for peft-medsa: builders of the five Med-SA benchmarks, readers and transforms.

Sample schema (what every builder yields; prompts, metrics and evaluation rely on it)
-------------------------------------------------------------------------------------
Formatted with `numpy_format` (the default of `load_benchmark`); without it, ``image`` / ``mask`` are PIL
images and volumes nested lists of the same values.

2D samples (REFUGE2, TNMIX, ISIC, 2D folder sets, and the slice view of 3D sets)::

    image        np.uint8 (H, W, 3)   RGB; grey modalities replicated; 3D slices: CT windowed / MRI scaled
    mask         np.uint8 (H, W)      label map of ids: binary 0/1 for single-target sets (ISIC lesion, TNMIX
                                      nodule), else ids named by label_names (REFUGE2 0/1 rim/2 cup; BTCV 0-13;
                                      BraTS 0/1/2/4)
    case_id      str                  unique per case; all slices of one volume share it
    spacing      [sy, sx] float       pixel size: 1.0 for 2D photographs, mm for slices of 3D sets
    label_names  list[str]            names indexed by id (label_names[k] names id k; "" for unused ids)
    + REFUGE2:   disc, cup np.uint8 (H, W) 0/1      the evaluated targets (disc = rim or cup)
    + TNMIX:     source str                          "tnscui" | "ddti" | "tn3k"
    + slices:    slice_index int, num_slices int     index d along the volume's first axis, and D
    + BraTS:     modalities list[str]                the MRI sequences in the image channels

3D samples (``view="volume"`` of BTCV, BraTS2021, NIfTI folder sets)::

    image           float32 (D, H, W)          BTCV: CT windowed to [0, 1] (or HU with window=None);
                    float32 (C, D, H, W)       BraTS: one channel per entry of modalities
    label           np.uint8 (D, H, W)         label map of ids (as mask above)
    case_id         str
    spacing         [sz, sy, sx] float         voxel size in mm, in the array's axis order
    affine          float64 (4, 4)             maps voxel (w, h, d, 1) to world mm (RAS+, as NIfTI)
    original_shape  [D, H, W] int              before the optional resize (volume_size, e.g. 128^3)
    original_affine float64 (4, 4)             before the optional resize
    label_names     list[str]
    + BraTS:        modalities list[str]

Label ids and names, and the evaluated targets made of several ids (BraTS WT/TC/ET, REFUGE2 disc/cup), are
defined once in `peft_medsa.data.labels`; `region_masks(mask, spec)` turns a label map into binary targets.

Coordinates: ``(x, y)`` pixel coordinates (x = column, y = row) and XYXY boxes, in model input space after
`transforms.resize_longest_and_pad`; `transforms.ResizeInfo` maps prompts and predictions back.

Errors: a bad file or layout raises a `DataLayoutError` (a ``ValueError``; `MissingFileError` is also a
``FileNotFoundError``) naming the file and what was expected. Builders take ``on_bad_case="raise" | "skip"``.
"""

from __future__ import annotations

from .io import (
    DataLayoutError,
    MissingFileError,
    UnreadableFileError,
    Volume,
    read_dicom_series,
    read_image,
    read_mask,
    read_nifti,
    read_volume,
    write_nifti,
)
from .labels import BENCHMARK_LABELS, BRATS2021, BTCV, ISIC, REFUGE2, TNMIX, LabelSpec, get_labels, region_masks
from .transforms import (
    LITE_MEDSAM_IMAGE_SIZE,
    SAM_IMAGE_SIZE,
    ResizeInfo,
    boxes_to_input,
    boxes_to_original,
    medsam_normalize,
    model_pixels,
    normalize_mri,
    points_to_input,
    points_to_original,
    preprocess_medsam,
    resize_longest_and_pad,
    resize_volume,
    restore_original_size,
    window_ct,
)

# The builders need the `datasets` library; they are imported on first use so that the readers and transforms
# (used by training and inference) work without it.
_BUILDER_NAMES = (
    "BUILDERS",
    "BraTS2021Builder",
    "BTCVBuilder",
    "ISICBuilder",
    "MedicalFolderBuilder",
    "REFUGE2Builder",
    "TNMIXBuilder",
    "load_benchmark",
    "numpy_format",
)


def __getattr__(name: str):
    if name in _BUILDER_NAMES:
        from . import builders

        return getattr(builders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BENCHMARK_LABELS",
    "BRATS2021",
    "BTCV",
    "BUILDERS",
    "BTCVBuilder",
    "BraTS2021Builder",
    "DataLayoutError",
    "ISIC",
    "ISICBuilder",
    "LITE_MEDSAM_IMAGE_SIZE",
    "LabelSpec",
    "MedicalFolderBuilder",
    "MissingFileError",
    "REFUGE2",
    "REFUGE2Builder",
    "ResizeInfo",
    "SAM_IMAGE_SIZE",
    "TNMIX",
    "TNMIXBuilder",
    "UnreadableFileError",
    "Volume",
    "boxes_to_input",
    "boxes_to_original",
    "get_labels",
    "load_benchmark",
    "medsam_normalize",
    "model_pixels",
    "normalize_mri",
    "numpy_format",
    "points_to_input",
    "points_to_original",
    "preprocess_medsam",
    "read_dicom_series",
    "read_image",
    "read_mask",
    "read_nifti",
    "read_volume",
    "region_masks",
    "resize_longest_and_pad",
    "resize_volume",
    "restore_original_size",
    "window_ct",
    "write_nifti",
]
