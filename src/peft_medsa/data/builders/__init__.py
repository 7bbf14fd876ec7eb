"""`datasets` builders of the Med-SA benchmarks, read from their official on-disk layouts, and `load_benchmark`.

Each builder is a `datasets.GeneratorBasedBuilder` subclass used directly (datasets 5 has no loading scripts)::

    >>> builder = BTCVBuilder(data_dir="/data/BTCV", cache_dir="/tmp/hf", view="volume")  # doctest: +SKIP
    >>> builder.download_and_prepare()  # doctest: +SKIP
    >>> train = builder.as_dataset("train")  # doctest: +SKIP

or, in one call, formatted to numpy arrays::

    >>> train = load_benchmark("btcv", "/data/BTCV", split="train", view="slice")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import datasets

from .base import MedicalBuilder, MedicalBuilderConfig
from .brats2021 import BraTS2021Builder, BraTS2021Config
from .btcv import BTCVBuilder, BTCVConfig
from .features import numpy_format
from .folder import MedicalFolderBuilder, MedicalFolderConfig
from .isic import ISICBuilder
from .refuge2 import REFUGE2Builder
from .tnmix import TNMIXBuilder, TNMIXConfig
from .volumes import VolumeBuilder, VolumeBuilderConfig

BUILDERS: dict[str, type[MedicalBuilder]] = {
    "btcv": BTCVBuilder,
    "refuge2": REFUGE2Builder,
    "brats2021": BraTS2021Builder,
    "tnmix": TNMIXBuilder,
    "isic": ISICBuilder,
    "folder": MedicalFolderBuilder,
}
"""Benchmark name -> builder class (``"folder"`` is the generic builder for a user's own data)."""


def load_benchmark(
    name: str,
    data_dir: str | Path,
    split: str | None = None,
    view: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    numpy: bool = True,
    **config_kwargs,
) -> datasets.Dataset | datasets.DatasetDict:
    """Build (or reuse from the cache) a benchmark and return it.

    Args:
        name: ``"btcv"``, ``"refuge2"``, ``"brats2021"``, ``"tnmix"``, ``"isic"`` (or ``"isic2016"``,
            ``"isic2017"``, ``"isic2018"``) or ``"folder"``.
        data_dir: root of the official layout (see each builder's module docstring and docs/datasets.md).
        split: ``"train"``, ``"validation"``, ``"test"``, or None for a `datasets.DatasetDict` of all splits.
        view: 3D sets: ``"slice"`` (default, 2D samples) or ``"volume"``. 2D sets accept None or ``"slice"``.
        cache_dir: where `datasets` writes the prepared Arrow files (default: its own cache).
        numpy: return image / mask / label / affine columns as numpy arrays (`numpy_format`); False leaves the
            `datasets` defaults (PIL images, nested lists).
        **config_kwargs: builder options, e.g. ``on_bad_case="skip"``, ``volume_size=(128, 128, 128)``,
            ``year=2017`` (ISIC), ``subsets=("tnscui", "ddti", "tn3k")`` (TNMIX), ``label_names=...`` (folder).

    Returns:
        The split as a `datasets.Dataset`, or all splits as a `datasets.DatasetDict`.

    Raises:
        KeyError: unknown benchmark name.
        DataLayoutError: the folder does not hold the expected layout, or a bad case with ``on_bad_case="raise"``.
    """
    key = name.lower()
    config_name = None
    if key.startswith("isic") and key != "isic":
        key, config_name = "isic", key[len("isic") :]
    if "year" in config_kwargs:
        if key != "isic":
            raise TypeError(f"year= applies to ISIC only, not {name!r}")
        config_name = str(config_kwargs.pop("year"))
    if key not in BUILDERS:
        raise KeyError(f"unknown benchmark {name!r}; expected one of {sorted(BUILDERS)} (or isic2016/2017/2018)")
    builder_cls = BUILDERS[key]
    if view is not None:
        if issubclass(builder_cls, VolumeBuilder):
            config_kwargs["view"] = view
        elif view != "slice":
            raise ValueError(f"{name!r} is a 2D benchmark; view={view!r} applies to 3D sets (btcv, brats2021, folder)")
    builder = builder_cls(
        data_dir=str(data_dir),
        cache_dir=None if cache_dir is None else str(cache_dir),
        config_name=config_name,
        **config_kwargs,
    )
    builder.download_and_prepare()
    dataset = builder.as_dataset(split=split)
    return numpy_format(dataset) if numpy else dataset


__all__ = [
    "BUILDERS",
    "BTCVBuilder",
    "BTCVConfig",
    "BraTS2021Builder",
    "BraTS2021Config",
    "ISICBuilder",
    "MedicalBuilder",
    "MedicalBuilderConfig",
    "MedicalFolderBuilder",
    "MedicalFolderConfig",
    "REFUGE2Builder",
    "TNMIXBuilder",
    "TNMIXConfig",
    "VolumeBuilder",
    "VolumeBuilderConfig",
    "load_benchmark",
    "numpy_format",
]
