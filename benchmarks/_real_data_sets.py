"""The four real 2D datasets of `real_data.py`: where they live, how their masks are binarised, and the fixed split.

Every set is read from ``<data root>/<folder>/images`` and ``.../masks`` (``../shared/data`` relative to the repository
root by default), never copied. Pairs are sorted by image file name; position ``i`` (0-based) of that order goes to
validation when ``i % 3 == 2``, else to training: 20 pairs -> 14 training, 6 validation. ORIGA disc and ORIGA cup are
two targets on the same 20 fundus images and share the same split.

| name | folder | mask file of ``images/<stem>.<ext>`` | target |
|---|---|---|---|
| ``isic`` | ``isic2016_512`` | ``masks/<stem>_Segmentation.jpg`` | lesion = value > 127 (JPEG) |
| ``ddti`` | ``ddti_thyroid`` | ``masks/<stem>.gif`` | nodule = value 255 (grey image -> RGB) |
| ``origa_disc`` | ``origa_fundus`` | ``masks/<stem>.png`` | optic disc = value >= 1 |
| ``origa_cup`` | ``origa_fundus`` | ``masks/<stem>.png`` | optic cup = value == 2 |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from peft_medsa.data.io import is_image_file, read_image, read_mask

VALIDATION_EVERY = 3
"""Position ``i`` of the sorted pairs is a validation case when ``i % VALIDATION_EVERY == VALIDATION_EVERY - 1``."""

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""``../shared/data`` relative to the repository root."""


@dataclass(frozen=True)
class RealDataset:
    """One binary segmentation target on one folder of image / mask pairs.

    Args:
        name: Short name used on the command line and in tables (``"isic"``, ...).
        folder: Folder under the data root holding ``images/`` and ``masks/``.
        mask_name: Mask file name of an image's stem.
        binarize: Raw mask values ``(H, W)`` (from :func:`peft_medsa.data.io.read_mask`) -> bool target ``(H, W)``.
        target: What the foreground is, in words (for tables and messages).
    """

    name: str
    folder: str
    mask_name: Callable[[str], str]
    binarize: Callable[[np.ndarray], np.ndarray]
    target: str


DATASETS: dict[str, RealDataset] = {
    "isic": RealDataset("isic", "isic2016_512", lambda s: f"{s}_Segmentation.jpg", lambda m: m > 127,
                        "skin lesion (ISIC 2016, dermoscopy)"),
    "ddti": RealDataset("ddti", "ddti_thyroid", lambda s: f"{s}.gif", lambda m: m == 255,
                        "thyroid nodule (DDTI, ultrasound)"),
    "origa_disc": RealDataset("origa_disc", "origa_fundus", lambda s: f"{s}.png", lambda m: m >= 1,
                              "optic disc (ORIGA, fundus)"),
    "origa_cup": RealDataset("origa_cup", "origa_fundus", lambda s: f"{s}.png", lambda m: m == 2,
                             "optic cup (ORIGA, fundus)"),
}


def list_pairs(dataset: RealDataset, data_root: str | Path) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of ``dataset``, sorted by image file name.

    Raises:
        FileNotFoundError: The dataset folder, or the mask of one of its images, is missing (path named).
    """
    images = Path(data_root) / dataset.folder / "images"
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: missing image folder of dataset {dataset.name!r}")
    pairs = []
    for image in sorted(p for p in images.iterdir() if is_image_file(p)):
        mask = images.parent / "masks" / dataset.mask_name(image.stem)
        if not mask.is_file():
            raise FileNotFoundError(f"{mask}: missing mask of {image}")
        pairs.append((image, mask))
    return pairs


def split_pairs(pairs: Sequence[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """The fixed split: ``(train, validation)``; validation = positions ``2, 5, 8, ...`` of the sorted pairs."""
    ordered = sorted(pairs, key=lambda pair: pair[0].name)
    validation = [p for i, p in enumerate(ordered) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1]
    train = [p for i, p in enumerate(ordered) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1]
    return train, validation


def load_sample(dataset: RealDataset, image_path: Path, mask_path: Path) -> dict:
    """One sample at its ORIGINAL size: ``image`` ``(H, W, 3)`` uint8 RGB, ``mask`` ``(H, W)`` uint8 0/1, ``case_id``.

    Raises:
        ValueError: Image and mask sizes differ, or the target is empty (file named).
    """
    image = read_image(image_path)
    mask = np.asarray(dataset.binarize(read_mask(mask_path)), dtype=np.uint8)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"{mask_path}: mask shape {mask.shape} differs from image shape {image.shape[:2]}")
    if not mask.any():
        raise ValueError(f"{mask_path}: empty {dataset.target} mask")
    return {"image": image, "mask": mask, "case_id": image_path.stem}


def load_split(
    dataset: RealDataset, data_root: str | Path, max_train: int | None = None, max_validation: int | None = None
) -> tuple[list[dict], list[dict]]:
    """Training and validation samples of ``dataset`` (the first ``max_*`` of each part of the split, if given)."""
    train, validation = split_pairs(list_pairs(dataset, data_root))
    train, validation = train[:max_train], validation[:max_validation]
    return ([load_sample(dataset, *p) for p in train], [load_sample(dataset, *p) for p in validation])


__all__ = [
    "DATASETS",
    "DEFAULT_DATA_ROOT",
    "VALIDATION_EVERY",
    "RealDataset",
    "list_pairs",
    "load_sample",
    "load_split",
    "split_pairs",
]


def add_set_arguments(parser: Any, default_sets: Sequence[str] = ("origa_disc", "origa_cup")) -> None:
    """``--sets``, ``--seeds``, ``--repeats``, ``--threads`` and ``--data-root``: the arguments of the scripts that
    train or load one adapter per set and training seed and score it on the validation split."""
    parser.add_argument("--sets", nargs="+", choices=sorted(DATASETS), default=list(default_sets))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--repeats", type=int, default=5, help="prompt seeds per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)


def ready(args: Any) -> bool:
    """``False`` (after printing ``SKIPPED``) when ``args.data_root`` is absent; else sets ``args.threads`` torch
    threads, flushes denormals and returns ``True``."""
    import torch

    if not Path(args.data_root).is_dir():
        print(f"SKIPPED: real data folder {args.data_root} is absent")
        return False
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    return True


def saved_models(folder: str | Path, name: str, seeds: Sequence[int], zero_shot: bool = False):
    """Yields ``(label, model)``: zero-shot LiteMedSAM first when ``zero_shot``, then the saved adapter
    ``folder/<name>-s<seed>`` of each seed (``"medsa s<seed>"``), in eval mode; a missing adapter is reported and
    skipped."""
    from peft import PeftModel

    from peft_medsa.backbones import convert_lite_medsam

    if zero_shot:
        yield "zero-shot", convert_lite_medsam().eval()
    for seed in seeds:
        path = Path(folder) / f"{name}-s{seed}"
        if not (path / "adapter_config.json").is_file():
            print(f"missing adapter {path}", flush=True)
            continue
        yield f"medsa s{seed}", PeftModel.from_pretrained(convert_lite_medsam(), str(path)).eval()


def append_json_lines(path: Path | None, records: Sequence[dict]) -> None:
    """Appends ``records`` to ``path`` as JSON lines (nothing when ``path`` is ``None``)."""
    import json

    if path is not None:
        with Path(path).open("a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
