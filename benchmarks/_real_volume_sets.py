"""The real volumes of `real_volumes.py`: where they live, their targets, slice thinning and train / test splits.

Every volume is read in place from ``<data root>/...`` (``../shared/data`` from the repository root), never copied.
Axes: ``(D, H, W)``, slice ``z`` = ``array[z]`` (:func:`peft_medsa.data.io.read_nifti`); slices are kept every
``stride``-th one (the affine's slice axis is scaled accordingly, so predicted NIfTI files overlay the thinned volume).

- ``brats2015``: ``brats2015_deepmedic/<case>`` (3 cases); channels FLAIR, T1c, FLAIR; targets WT (label > 0) and
  TC (label 1, 3 or 4); slice stride 6 in `real_volumes.py` (6 mm); leave one case out (3 folds).
- ``brats2021``: ``brats2021_01646``; FLAIR; edema; stride 2 (3 mm); the lower half of the edema's slices train, the
  upper half test, with a gap of 2 slices.
- ``ct``: ``ct_volume_totalseg``; CT in the window 40 / 400 HU; spleen, right and left kidney, liver (BTCV ids 1, 2,
  3, 6); stride 1 (3 mm); slices 0-13 train, 16-29 test.

Only the slices from 2 strides below to 2 strides above the union of the targets are kept (the rest is brain / body
without target and would cost encoder time only); false positives there are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from peft_medsa.data.io import read_nifti
from peft_medsa.inference.volume_io import volume_to_uint8

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BRATS2015_CASES = ("brats_2013_pat0001_1", "brats_2013_pat0003_1", "brats_2013_pat0005_1")
CT_ORGANS = {"spleen": 1, "right kidney": 2, "left kidney": 3, "liver": 6}


@dataclass
class VolumeCase:
    """One (thinned) volume with its target masks.

    Attributes:
        case_id: name in tables and file names.
        slices: ``(D, H, W, 3)`` uint8 model images, one per slice.
        targets: ``{name: (D, H, W) bool}``.
        spacing: ``(sz, sy, sx)`` mm after thinning.
        affine: ``(4, 4)`` voxel ``(w, h, d, 1)`` -> mm of the thinned volume.
    """

    case_id: str
    slices: np.ndarray
    targets: dict[str, np.ndarray]
    spacing: tuple[float, float, float]
    affine: np.ndarray

    def crop(self, start: int, stop: int, suffix: str = "") -> VolumeCase:
        """Slices ``start..stop-1`` (affine moved to the first kept slice)."""
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, 3] + start * self.affine[:3, 2]
        targets = {k: v[start:stop] for k, v in self.targets.items()}
        return VolumeCase(self.case_id + suffix, self.slices[start:stop], targets, self.spacing, affine)


@dataclass
class VolumeSet:
    """Training cases and test cases of one fold."""

    name: str
    fold: str
    train: list[VolumeCase]
    test: list[VolumeCase]
    target_names: list[str] = field(default_factory=list)


def _thin(channels: list[np.ndarray], labels: dict[str, np.ndarray], volume, stride: int, case_id: str) -> VolumeCase:
    union = np.any([m for m in labels.values()], axis=0)
    present = np.flatnonzero(union.reshape(len(union), -1).any(1))
    first = max(int(present[0]) - 2 * stride, 0)
    last = min(int(present[-1]) + 2 * stride, len(union) - 1)
    keep = np.arange(first, last + 1, stride)
    slices = np.stack([channels[c][keep] for c in range(3)], axis=-1)
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, 3] + first * volume.affine[:3, 2]
    affine[:3, 2] = volume.affine[:3, 2] * stride
    spacing = (volume.spacing[0] * stride, volume.spacing[1], volume.spacing[2])
    return VolumeCase(case_id, slices, {k: v[keep] for k, v in labels.items()}, spacing, affine)


def brats2015_case(root: Path, case: str, stride: int = 4) -> VolumeCase:
    folder = root / "brats2015_deepmedic" / case
    flair = read_nifti(folder / "Flair_subtrMeanDivStd.nii.gz")
    t1c = read_nifti(folder / "T1c_subtrMeanDivStd.nii.gz")
    label = read_nifti(folder / "OTMultiClass.nii.gz").array.astype(np.int64)
    flair8, t1c8 = volume_to_uint8(flair.array), volume_to_uint8(t1c.array)
    targets = {"WT": label > 0, "TC": np.isin(label, (1, 3, 4))}
    return _thin([flair8, t1c8, flair8], targets, flair, stride, case.replace("brats_2013_", ""))


def brats2015_folds(root: Path, stride: int = 4, folds: int = 3) -> list[VolumeSet]:
    cases = [brats2015_case(root, c, stride) for c in BRATS2015_CASES]
    return [
        VolumeSet(
            "brats2015",
            f"test {cases[i].case_id}",
            [c for j, c in enumerate(cases) if j != i],
            [cases[i]],
            ["WT", "TC"],
        )
        for i in range(min(folds, len(cases)))
    ]


def _half_split(case: VolumeCase, target_union: np.ndarray, gap: int) -> tuple[VolumeCase, VolumeCase]:
    present = np.flatnonzero(target_union.reshape(len(target_union), -1).any(1))
    middle = int(present[len(present) // 2])
    return case.crop(0, middle - gap // 2, "-lower"), case.crop(middle + gap - gap // 2, len(case.slices), "-upper")


def brats2021_set(root: Path, stride: int = 2) -> VolumeSet:
    folder = root / "brats2021_01646"
    flair = read_nifti(folder / "flair.nii.gz")
    edema = read_nifti(folder / "label_edema.nii.gz").array > 0
    flair8 = volume_to_uint8(flair.array)
    case = _thin([flair8] * 3, {"edema": edema}, flair, stride, "01646")
    train, test = _half_split(case, case.targets["edema"], gap=2)
    return VolumeSet("brats2021", "lower half -> upper half", [train], [test], ["edema"])


def ct_set(root: Path) -> VolumeSet:
    folder = root / "ct_volume_totalseg"
    ct = read_nifti(folder / "example_ct_sm.nii.gz")
    labels = read_nifti(folder / "example_seg_btcv13.nii.gz").array.astype(np.int64)
    window = volume_to_uint8(ct.array, (40.0, 400.0))
    targets = {name: labels == value for name, value in CT_ORGANS.items()}
    case = VolumeCase("ct_totalseg", np.stack([window] * 3, axis=-1), targets, ct.spacing, ct.affine.copy())
    depth = len(case.slices)
    half = depth // 2
    return VolumeSet(
        "ct",
        "slices 0-13 -> 16-29",
        [case.crop(0, half - 1, "-lower")],
        [case.crop(half + 1, depth, "-upper")],
        list(CT_ORGANS),
    )


def data_available(root: Path) -> str | None:
    """``None`` when every file is there, else the first missing path."""
    needed = [root / "brats2015_deepmedic" / c / "OTMultiClass.nii.gz" for c in BRATS2015_CASES]
    needed += [root / "brats2021_01646" / "flair.nii.gz", root / "ct_volume_totalseg" / "example_ct_sm.nii.gz"]
    for path in needed:
        if not path.exists():
            return str(path)
    return None
