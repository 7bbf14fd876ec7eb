"""Label ids, names and derived regions of each benchmark: the one place that defines them.

Each benchmark's masks are stored as label maps of integer ids (0 is always background). `LabelSpec.regions`
lists the targets that are evaluated, each a union of ids: BraTS' whole tumour is ``(1, 2, 4)``, REFUGE2's optic
disc is rim plus cup ``(1, 2)``. Sets without explicit regions evaluate each class on its own (`targets`).

Example:
    >>> from peft_medsa.data.labels import BTCV, region_masks
    >>> BTCV.classes[1], BTCV.names_by_id()[13]
    ('spleen', 'left adrenal gland')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np


@dataclass(frozen=True)
class LabelSpec:
    """Label ids and names of one benchmark.

    Attributes:
        name: benchmark name (``"btcv"``, ``"brats2021"``, ...).
        classes: id -> name, background (0) included. Ids need not be contiguous (BraTS has no 3).
        regions: evaluated target name -> the ids it unites; empty means each foreground class on its own.
    """

    name: str
    classes: Mapping[int, str]
    regions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.classes.get(0) != "background":
            raise ValueError(f"LabelSpec {self.name!r}: classes must map 0 to 'background', got {dict(self.classes)}")
        object.__setattr__(self, "classes", MappingProxyType(dict(sorted(self.classes.items()))))
        unknown = {i for ids in self.regions.values() for i in ids} - set(self.classes)
        if unknown:
            raise ValueError(f"LabelSpec {self.name!r}: regions use ids {sorted(unknown)} that are not classes")
        object.__setattr__(self, "regions", MappingProxyType(dict(self.regions)))

    @property
    def ids(self) -> tuple[int, ...]:
        """All label ids, background included, ascending."""
        return tuple(self.classes)

    @property
    def foreground_ids(self) -> tuple[int, ...]:
        """Label ids other than background, ascending."""
        return tuple(i for i in self.classes if i != 0)

    def names_by_id(self) -> list[str]:
        """Names indexed by id (``names[k]`` names id ``k``), ``""`` for unused ids below the largest one.

        This is the ``label_names`` field of every sample.
        """
        names = [""] * (max(self.classes) + 1)
        for i, name in self.classes.items():
            names[i] = name
        return names

    def targets(self) -> dict[str, tuple[int, ...]]:
        """The evaluated targets: `regions` if any, else each foreground class alone (name -> ``(id,)``)."""
        if self.regions:
            return dict(self.regions)
        return {self.classes[i]: (i,) for i in self.foreground_ids}


def binary_spec(name: str, foreground: str = "foreground") -> LabelSpec:
    """A single-target `LabelSpec`: ``{0: "background", 1: foreground}``."""
    return LabelSpec(name=name, classes={0: "background", 1: foreground})


def spec_from_names(name: str, label_names: list[str] | tuple[str, ...]) -> LabelSpec:
    """A `LabelSpec` from names indexed by id (index 0 is always background; ``""`` marks unused ids)."""
    classes = {i: str(n) for i, n in enumerate(label_names) if i and n}
    return LabelSpec(name=name, classes={0: "background", **classes})


def region_masks(label: np.ndarray, spec: LabelSpec) -> dict[str, np.ndarray]:
    """Binary masks of each target of ``spec`` from a label map.

    Args:
        label: ``(H, W)`` or ``(D, H, W)`` integer label map.
        spec: the benchmark's labels.

    Returns:
        target name -> ``np.uint8`` 0/1 mask of the shape of ``label``.
    """
    label = np.asarray(label)
    return {name: np.isin(label, ids).astype(np.uint8) for name, ids in spec.targets().items()}


BTCV = LabelSpec(
    name="btcv",
    classes={
        0: "background",
        1: "spleen",
        2: "right kidney",
        3: "left kidney",
        4: "gallbladder",
        5: "esophagus",
        6: "liver",
        7: "stomach",
        8: "aorta",
        9: "inferior vena cava",
        10: "portal and splenic veins",
        11: "pancreas",
        12: "right adrenal gland",
        13: "left adrenal gland",
    },
)
"""BTCV (Synapse multi-organ CT): 13 organs. The paper's tables merge ids 12 and 13 into one "AG" column."""

REFUGE2 = LabelSpec(
    name="refuge2",
    classes={0: "background", 1: "optic disc rim", 2: "optic cup"},
    regions={"optic disc": (1, 2), "optic cup": (2,)},
)
"""REFUGE2 fundus: rim and cup are disjoint ids; the evaluated optic disc is rim plus cup."""

REFUGE_MASK_VALUES: Mapping[int, int] = MappingProxyType({255: 0, 128: 1, 0: 2})
"""REFUGE BMP pixel value -> `REFUGE2` id (255 background, 128 disc rim, 0 cup)."""

BRATS2021 = LabelSpec(
    name="brats2021",
    classes={0: "background", 1: "necrotic tumour core", 2: "peritumoral edema", 4: "enhancing tumour"},
    regions={"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
)
"""BraTS 2021 glioma MRI: labels 1 NCR, 2 ED, 4 ET; evaluated as whole tumour, tumour core, enhancing tumour."""

TNMIX = binary_spec("tnmix", "thyroid nodule")
"""TNMIX thyroid ultrasound (TN-SCUI 2020 + DDTI, optionally TN3K): one nodule target."""

ISIC = binary_spec("isic", "skin lesion")
"""ISIC 2016-2018 Task 1 dermoscopy: one lesion target."""

BENCHMARK_LABELS: Mapping[str, LabelSpec] = MappingProxyType(
    {spec.name: spec for spec in (BTCV, REFUGE2, BRATS2021, TNMIX, ISIC)}
)
"""Benchmark name -> its `LabelSpec`."""


def spec_for_label_names(label_names: Mapping[int, str] | list[str] | tuple[str, ...]) -> LabelSpec:
    """The `LabelSpec` that a sample's ``label_names`` come from.

    Builders store ``spec.names_by_id()`` in every sample; names equal to a benchmark's give that benchmark's spec,
    hence its evaluated regions (REFUGE2: optic disc = rim + cup and optic cup; BraTS: WT, TC, ET). Other names (a
    user's folder) give one target per named class.

    Args:
        label_names: Names indexed by id (``""`` for unused ids), or ``{id: name}``; id 0 is background.
    """
    if isinstance(label_names, Mapping):
        names = [""] * (max((int(k) for k in label_names), default=0) + 1)
        for k, v in label_names.items():
            names[int(k)] = str(v)
        names[0] = "background"
    else:
        names = [str(n) for n in label_names]
    for spec in BENCHMARK_LABELS.values():
        if spec.names_by_id() == names:
            return spec
    return spec_from_names("custom", names)


def get_labels(benchmark: str) -> LabelSpec:
    """The `LabelSpec` of a benchmark by name (case-insensitive); raises `KeyError` listing the known names."""
    try:
        return BENCHMARK_LABELS[benchmark.lower()]
    except KeyError:
        raise KeyError(f"unknown benchmark {benchmark!r}; expected one of {sorted(BENCHMARK_LABELS)}") from None
