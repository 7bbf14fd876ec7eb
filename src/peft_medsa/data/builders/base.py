"""The shared base of the benchmark builders: configuration, bad-case policy, split carving, 2D samples.

A builder subclass says where its cases are (`MedicalBuilder._list_splits`) and how one case becomes samples
(`MedicalBuilder._case_samples`); the base turns problems of single cases into errors or warnings according to
``on_bad_case`` and reports the count of skipped cases at the end of each split.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets.exceptions import DatasetGenerationError

from ..io import DataLayoutError, MissingFileError
from ..labels import LabelSpec
from .cases import Case, MaskCoding, load_pair
from .features import encode_image_file, encode_png, image_features

logger = logging.getLogger(__name__)

ON_BAD_CASE = ("raise", "skip")


@dataclass
class MedicalBuilderConfig(datasets.BuilderConfig):
    """Options shared by all builders (besides ``data_dir``, the root of the official layout).

    Args:
        on_bad_case: ``"raise"`` (default) stops at the first bad case (missing or unreadable file, size mismatch,
            mask values outside the declared labels) with an error naming the file; ``"skip"`` leaves it out with a
            warning and reports how many were skipped at the end of the split (also in ``builder.bad_cases``).
        val_fraction: fraction of the ``train`` cases moved to a ``validation`` split (for layouts without one).
        test_fraction: fraction of the ``train`` cases moved to a ``test`` split (for layouts without one).
        split_seed: seed of the random case assignment for ``val_fraction`` / ``test_fraction``.
    """

    on_bad_case: str = "raise"
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.on_bad_case not in ON_BAD_CASE:
            raise ValueError(f"on_bad_case={self.on_bad_case!r}; expected one of {ON_BAD_CASE}")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)}; expected a fraction in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave some training cases")


def carve_splits(
    splits: dict[str, list[Case]], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Case]]:
    """Move random fractions of the ``train`` cases to ``validation`` / ``test`` (deterministic for a seed).

    Raises:
        ValueError: a fraction is asked for a split that the layout already provides.
    """
    asked = {"validation": val_fraction, "test": test_fraction}
    asked = {name: fraction for name, fraction in asked.items() if fraction > 0}
    if not asked:
        return splits
    for name in asked:
        if splits.get(name):
            option = "val_fraction" if name == "validation" else "test_fraction"
            raise ValueError(f"the layout already has a {name!r} split; leave {option}=0")
    train = sorted(splits.get("train", []), key=lambda c: c.case_id)
    order = np.random.default_rng(seed).permutation(len(train))
    out = dict(splits)
    start = 0
    for name, fraction in asked.items():
        count = max(1, int(round(fraction * len(train))))
        out[name] = [train[i] for i in sorted(order[start : start + count])]
        start += count
    if start >= len(train):
        raise ValueError(f"{len(train)} training cases are too few for the requested fractions {asked}")
    out["train"] = [train[i] for i in sorted(order[start:])]
    return out


class MedicalBuilder(datasets.GeneratorBasedBuilder):
    """Base of the peft-medsa builders: ``B(data_dir=..., cache_dir=...)``, then ``download_and_prepare()``.

    Subclasses set `LABELS` and implement `_list_splits` and, unless they are 2D image / mask sets,
    `_features` and `_case_samples`.

    Attributes:
        bad_cases: ``(split, case_id, message)`` of each case skipped with ``on_bad_case="skip"``.
    """

    BUILDER_CONFIG_CLASS = MedicalBuilderConfig
    VERSION = datasets.Version("1.0.0")
    LABELS: LabelSpec
    LAYOUT = ""
    """A one-line description of the expected layout, used in error messages."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.config.__post_init__()  # datasets sets keyword overrides of a named config without validating them
        self.bad_cases: list[tuple[str, str, str]] = []

    # --- what subclasses provide -------------------------------------------------------------------------------
    def _list_splits(self, root: Path) -> dict[str, list[Case]]:
        """Split name -> cases found under ``root``; raise `DataLayoutError` for a wrong layout."""
        raise NotImplementedError

    def _features(self) -> datasets.Features:
        """The features of a sample (default: 2D image / mask)."""
        return image_features()

    def _mask_coding(self, case: Case) -> MaskCoding:
        """How the case's stored mask values map to label ids (default: binary)."""
        return MaskCoding(names=tuple(self.LABELS.names_by_id()))

    def _case_samples(self, case: Case) -> list[tuple[str, dict]]:
        """``(key, sample)`` pairs of one case (default: one 2D image / mask sample)."""
        image, label = load_pair(case, self._mask_coding(case))
        return [(case.case_id, self._sample_2d(case, image, label))]

    # --- shared machinery --------------------------------------------------------------------------------------
    def _sample_2d(self, case: Case, image: np.ndarray, label: np.ndarray, **columns) -> dict:
        return {
            "image": encode_image_file(case.image, image),
            "mask": encode_png(label),
            "case_id": case.case_id,
            "spacing": [1.0, 1.0],
            "label_names": self.LABELS.names_by_id(),
            **case.extra,
            **columns,
        }

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=(self.__doc__ or "").strip().split("\n")[0], features=self._features())

    def _data_root(self) -> Path:
        if not self.config.data_dir:
            raise ValueError(f"{type(self).__name__} needs data_dir=..., the root of the layout: {self.LAYOUT}")
        root = Path(self.config.data_dir).expanduser()
        if not root.is_dir():
            raise MissingFileError(f"{root}: missing data folder; expected {self.LAYOUT}")
        return root

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        config = self.config
        splits = self._list_splits(self._data_root())
        splits = carve_splits(splits, config.val_fraction, config.test_fraction, config.split_seed)
        return [
            datasets.SplitGenerator(name=name, gen_kwargs={"cases": cases, "split": name})
            for name, cases in splits.items()
        ]

    def _generate_examples(self, cases: list[Case], split: str):
        skipped: list[str] = []
        for case in cases:
            try:
                samples = self._case_samples(case)
            except DataLayoutError as err:
                if self.config.on_bad_case == "raise":
                    raise
                skipped.append(case.case_id)
                self.bad_cases.append((split, case.case_id, str(err)))
                warnings.warn(f"{self.name} {split!r}: skipping bad case {case.case_id!r}: {err}", stacklevel=2)
                continue
            yield from samples
        if skipped:
            message = (
                f"{self.name} {split!r}: skipped {len(skipped)} of {len(cases)} cases (on_bad_case='skip'): "
                + ", ".join(skipped)
            )
            logger.warning(message)
            warnings.warn(message, stacklevel=2)
        if cases and len(skipped) == len(cases):
            raise DataLayoutError(f"{self.config.data_dir}: every case of split {split!r} is bad; see the warnings")

    def download_and_prepare(self, *args, **kwargs) -> None:
        """As `datasets.DatasetBuilder.download_and_prepare`, but layout errors surface as themselves.

        `datasets` wraps errors raised while generating examples in ``DatasetGenerationError``; a
        `DataLayoutError` (which names the bad file) is re-raised unwrapped.
        """
        try:
            return super().download_and_prepare(*args, **kwargs)
        except DatasetGenerationError as err:
            cause = err.__cause__
            if isinstance(cause, DataLayoutError):
                cause.__suppress_context__ = True  # hide the wrapper, keep the error's own cause
                raise cause  # noqa: B904
            raise
