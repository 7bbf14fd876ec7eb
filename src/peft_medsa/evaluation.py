"""The evaluation protocol of the Med-SA paper (section 4.2, Tables 1-4 and 10): prompted segmentation, repeated.

For every case and every class (organ) present in its ground truth, a prompt is simulated on the ground-truth mask
(:func:`peft_medsa.prompts.make_prompt`), the model predicts a mask from image + prompt, and Dice, IoU and HD95
are computed (:mod:`peft_medsa.metrics`). This is repeated ``repeats`` times with seeds ``seed, seed + 1, ...``
so that each repeat sees different random prompts; the summary reports, per class, the mean over cases for each
repeat, then the mean and the (population, ``ddof=0``) standard deviation of those means over the repeats.

- 2D samples: ``image`` ``(H, W, 3)`` (or ``(H, W)``), ``mask`` ``(H, W)`` binary or a label map, ``case_id``,
  optional ``spacing`` ``(sy, sx)`` (HD95 in pixels when absent).
- 3D samples: ``image`` ``(D, H, W)``, ``(D, H, W, C)`` or channels first ``(C, D, H, W)`` (the BraTS volume view),
  ``label`` (or ``mask``) ``(D, H, W)`` int, ``spacing`` ``(sz, sy, sx)`` mm. Each axial slice containing the
  class gets its own prompt and 2D prediction; slices without the class are
  predicted empty (no prompt can be placed there); Dice / IoU / HD95 are computed on the whole 3D volume in mm.
- Classes absent from a case's ground truth are not evaluated for that case (no row).
- Prompts are computed on the mask as given (original image space); :func:`sam_predict_fn` (a thin caller of
  :class:`~peft_medsa.inference.predictor.MedSAPredictor`) maps them into the model input space.
"""

from __future__ import annotations

import csv
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.labels import LabelSpec, spec_for_label_names
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .metrics import METRIC_NAMES, compute_dice, compute_hd95, compute_iou
from .metrics.mask_checks import check_mask_values
from .prompts import Prompt, make_prompt, slice_prompts

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvaluationResult",
    "PredictFn",
    "evaluate_model",
    "sam_predict_fn",
    "volume_slice",
]

PredictFn = Callable[[np.ndarray, Prompt], np.ndarray]
"""``predict_fn(image (H, W[, 3]), prompt in image pixel coordinates) -> (H, W) bool mask``."""

CSV_COLUMNS = ("case_id", "class", "repeat", "seed", "dice", "iou", "hd95")


def _nanmean(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(array.mean()) if array.size else math.nan


@dataclass
class EvaluationResult:
    """Per-case scores of one prompt setting over several repeats.

    Args:
        setting: The prompt setting (``"1pt"``, ``"bbox0.75"``, ...).
        seeds: The seed of each repeat.
        records: One row per case, class and repeat with the keys of ``CSV_COLUMNS``.
    """

    setting: str
    seeds: list[int]
    records: list[dict] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        """Classes in order of first appearance."""
        return list(dict.fromkeys(r["class"] for r in self.records))

    def summary(self) -> list[dict]:
        """Per-class table plus an ``"average"`` row (mean over classes), as the paper's tables.

        For each class and repeat, each metric is averaged over cases (NaN skipped, ``inf`` kept); the row holds the
        mean and population std of these per-repeat means: keys ``class``, ``n_cases``, ``<metric>_mean``,
        ``<metric>_std`` for ``dice``, ``iou``, ``hd95``. The average row averages the class means per repeat.
        An HD95 of ``inf`` (an organ predicted empty) makes that class's HD95 mean ``inf`` and its std NaN.

        Returns:
            A list of dicts, one per class, then the average row.
        """
        per_repeat: dict[str, dict[str, list[float]]] = {}
        rows = []
        for name in self.class_names:
            records = [r for r in self.records if r["class"] == name]
            per_repeat[name] = {
                metric: [_nanmean([r[metric] for r in records if r["repeat"] == k]) for k in range(len(self.seeds))]
                for metric in METRIC_NAMES
            }
            rows.append(self._row(name, len({r["case_id"] for r in records}), per_repeat[name]))
        if rows:
            average = {
                metric: [_nanmean([per_repeat[c][metric][k] for c in per_repeat]) for k in range(len(self.seeds))]
                for metric in METRIC_NAMES
            }
            rows.append(self._row("average", len({r["case_id"] for r in self.records}), average))
        return rows

    @staticmethod
    def _row(name: str, n_cases: int, per_repeat: dict[str, list[float]]) -> dict:
        row: dict = {"class": name, "n_cases": n_cases}
        for metric, values in per_repeat.items():
            array = np.asarray(values, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                row[f"{metric}_mean"] = float(array.mean())
                row[f"{metric}_std"] = float(array.std())
        return row

    def to_markdown(self, percent: bool = True, digits: int = 2) -> str:
        """Summary as a Markdown table with ``mean ± std`` cells (Dice and IoU in % when ``percent``)."""
        scale = {"dice": 100.0 if percent else 1.0, "iou": 100.0 if percent else 1.0, "hd95": 1.0}
        unit = " (%)" if percent else ""
        lines = [
            f"| class | n | Dice{unit} | IoU{unit} | HD95 |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in self.summary():
            cells = [
                f"{row[f'{m}_mean'] * scale[m]:.{digits}f} ± {row[f'{m}_std'] * scale[m]:.{digits}f}"
                for m in METRIC_NAMES
            ]
            lines.append(f"| {row['class']} | {row['n_cases']} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def write_csv(self, path: str | Path) -> Path:
        """Writes the per-case rows (``case_id, class, repeat, seed, dice, iou, hd95``) to ``path``."""
        return _write(path, CSV_COLUMNS, self.records)

    def write_summary_csv(self, path: str | Path) -> Path:
        """Writes :meth:`summary` to ``path``."""
        columns = ["class", "n_cases"] + [f"{m}_{s}" for m in METRIC_NAMES for s in ("mean", "std")]
        return _write(path, columns, self.summary())


def _write(path: str | Path, columns: Sequence[str], rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _targets(mask: np.ndarray, label_names, labels: LabelSpec | None) -> dict[str, tuple[int, ...]]:
    """Evaluated target name -> the label ids it unites; background (0) is never a target.

    ``labels`` (a benchmark's :class:`~peft_medsa.data.labels.LabelSpec`) wins; else the spec that ``label_names``
    come from (:func:`~peft_medsa.data.labels.spec_for_label_names`: the benchmark regions when they are a
    benchmark's names); else a binary mask is ``"foreground"`` and a label map has one target per non-zero value.
    """
    if labels is None and label_names is not None:
        labels = spec_for_label_names(label_names)
    if labels is not None:
        return labels.targets()
    values = [int(v) for v in np.unique(mask) if v != 0]
    if set(values) <= {1}:
        return {"foreground": (1,)}
    return {str(v): (v,) for v in values}


def _target_key(name: str, ids: tuple[int, ...]) -> int:
    """The per-target part of the prompt seed: the label id of a single-id target, a name hash for a region."""
    return ids[0] if len(ids) == 1 else zlib.crc32(name.encode()) & 0x7FFFFFFF


def _check_prediction(pred: np.ndarray, shape: tuple[int, ...], case_id: str) -> np.ndarray:
    pred = check_mask_values(pred, f"predict_fn's mask for case {case_id!r}")
    if pred.shape != shape:
        raise ValueError(f"predict_fn returned shape {pred.shape} for case {case_id!r}, expected {shape}")
    return pred.astype(bool)


def _predict_case(
    predict_fn: PredictFn, image: np.ndarray, target: np.ndarray, setting: str, rng: np.random.Generator, case_id: str
) -> np.ndarray:
    if target.ndim == 2:
        return _check_prediction(predict_fn(image, make_prompt(target, setting, rng, case_id)), target.shape, case_id)
    prompts = slice_prompts(target, setting, rng, case_id=case_id)
    pred = np.zeros(target.shape, dtype=bool)
    for z in prompts.slice_indices:
        image_z = volume_slice(image, int(z), target.shape, case_id)
        pred[z] = _check_prediction(predict_fn(image_z, prompts.prompts[z]), target.shape[1:], case_id)
    return pred


def volume_slice(image: np.ndarray, z: int, shape: tuple[int, int, int], case_id: str = "?") -> np.ndarray:
    """Slice ``z`` of a volume image as a 2D image: ``(D, H, W)`` -> ``(H, W)``; ``(D, H, W, C)`` -> ``(H, W, C)``;
    channels first ``(C, D, H, W)`` (the BraTS volume view) -> ``(H, W, C)``. ``shape`` is the mask's ``(D, H, W)``.

    Raises:
        ValueError: an image of another layout (naming the case and both shapes).
    """
    depth, height, width = shape
    if image.shape == shape or (image.ndim == 4 and image.shape[:3] == shape):
        return image[z]
    if image.ndim == 4 and image.shape[1:] == shape:
        return np.moveaxis(image[:, z], 0, -1)
    raise ValueError(
        f"case {case_id!r}: image of shape {image.shape} does not match its mask {shape}; expected (D, H, W), "
        "(D, H, W, C) or (C, D, H, W)"
    )


def evaluate_model(
    predict_fn: PredictFn,
    samples: Iterable[Mapping],
    setting: str,
    repeats: int = 5,
    seed: int = 0,
    label_names: Mapping[int, str] | Sequence[str] | None = None,
    show_progress: bool = True,
    labels: LabelSpec | None = None,
) -> EvaluationResult:
    """Runs the prompted evaluation protocol (module docstring) and collects per-case scores.

    Args:
        predict_fn: ``predict_fn(image, prompt) -> (H, W) bool`` with the prompt in the image's pixel coordinates,
            e.g. :func:`sam_predict_fn`. For 3D samples it is called on each prompted slice ``image[z]``.
        samples: Sample dicts (2D or 3D schema, module docstring); iterated once, so a generator works.
        setting: Prompt setting of :func:`peft_medsa.prompts.make_prompt` (``"1pt"``, ``"3pt"``, ``"bbox0.5"``,
            ``"bbox0.75"``, ``"bbox"``).
        repeats: Number of repeats with different random prompts (the paper uses 5).
        seed: Non-negative seed of the first repeat; repeat ``k`` uses ``seed + k``. The prompt generator of a case
            is seeded by ``(seed + k, crc32(case_id), label)``, so it does not depend on the sample order.
        label_names: Class names of label maps: a sequence indexed by label value, or ``{value: name}``; label 0 is
            background. Overrides a sample's ``label_names``. Names equal to a benchmark's (every builder stores
            them) select that benchmark's targets (REFUGE2: optic disc = rim + cup, optic cup; BraTS: WT, TC, ET;
            :meth:`~peft_medsa.data.labels.LabelSpec.targets`), the same targets training uses. Without names, a
            binary mask is one class ``"foreground"`` and other label maps use their non-zero values as names.
        show_progress: Show a tqdm progress bar over samples.
        labels: The benchmark's :class:`~peft_medsa.data.labels.LabelSpec`; overrides any names.

    Returns:
        The :class:`EvaluationResult` with one record per case, present class and repeat.

    Raises:
        ValueError: If a sample lacks a mask, or ``predict_fn`` returns a mask of the wrong shape.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    seeds = [seed + k for k in range(repeats)]
    result = EvaluationResult(setting=setting, seeds=seeds)
    total = len(samples) if hasattr(samples, "__len__") else None
    for index, sample in enumerate(tqdm(samples, total=total, desc=f"evaluate {setting}", disable=not show_progress)):
        case_id = str(sample.get("case_id", f"case_{index}"))
        mask = sample.get("mask", sample.get("label"))
        if mask is None:
            raise ValueError(f"sample {case_id!r} has neither 'mask' nor 'label'")
        mask = np.asarray(mask)
        image = np.asarray(sample["image"])
        spacing = sample.get("spacing")
        names = label_names if label_names is not None else sample.get("label_names")
        for name, ids in _targets(mask, names, labels).items():
            target = np.isin(mask, ids)
            if not target.any():
                continue
            for k, repeat_seed in enumerate(seeds):
                rng = np.random.default_rng([repeat_seed, zlib.crc32(case_id.encode()), _target_key(name, ids)])
                pred = _predict_case(predict_fn, image, target, setting, rng, case_id)
                result.records.append(
                    {
                        "case_id": case_id,
                        "class": name,
                        "repeat": k,
                        "seed": repeat_seed,
                        "dice": compute_dice(pred, target),
                        "iou": compute_iou(pred, target),
                        "hd95": compute_hd95(pred, target, spacing=spacing),
                    }
                )
    return result


def sam_predict_fn(
    model: torch.nn.Module,
    device: torch.device | str | None = None,
    normalization: str = "auto",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    mask_shape: str | None = "auto",
) -> PredictFn:
    """Turns a ``SamModel`` (or a ``PeftModel`` wrapping one) into a :data:`PredictFn` for :func:`evaluate_model`.

    A thin caller of the inference layer: a :class:`~peft_medsa.inference.predictor.MedSAPredictor` (long side
    resized to the model input size, normalised, padded; prompts mapped in; logits mapped back to the original size
    and thresholded at 0) wrapped by :func:`~peft_medsa.inference.predictor.cached_predict_fn`, so each image is
    embedded once however many prompts (settings, repeats, classes) it gets.

    Args:
        model: The SAM model (put in eval mode).
        device: Device to run on (default: the model's).
        normalization: ``"auto"`` (by model type), ``"imagenet"``, ``"minmax"`` or ``"none"``
            (:data:`peft_medsa.model_input.NORMALIZATIONS`).
        mean: Channel means for ``"imagenet"``.
        std: Channel standard deviations for ``"imagenet"``.
        mask_shape: ``"auto"`` (the adapter's recorded ``mask_shape``: ellipses fitted for an adapter trained on
            masks drawn as ellipses), ``None`` (masks as predicted) or ``"ellipse"`` (:mod:`peft_medsa.mask_shape`).

    Returns:
        ``predict_fn(image, prompt) -> (H, W) bool``.
    """
    from .inference.predictor import MedSAPredictor, cached_predict_fn

    predictor = MedSAPredictor(model, normalization=normalization, device=device, mean=mean, std=std,
                               mask_shape=mask_shape)
    return cached_predict_fn(predictor)
