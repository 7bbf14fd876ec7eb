"""Result tables and files of `real_data.py`: Markdown tables, a summary CSV and per-case CSVs.

Dice and IoU are shown in percent, HD95 in pixels of the original image, each as ``mean ± std`` over the prompt
repeats (:meth:`peft_medsa.evaluation.EvaluationResult.summary`: the mean over cases per repeat, then mean and
population std of those). An HD95 of ``inf`` means that at least one prediction was empty; the ``empty`` column gives
the share of empty predictions over all cases and repeats.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peft_medsa.evaluation import EvaluationResult

SETTING_LABELS = {"1pt": "1-point", "3pt": "3-points", "bbox0.5": "BBox 0.5", "bbox0.75": "BBox 0.75"}
"""Prompt setting -> its name in the paper's tables."""

METHOD_LABELS = {
    "zero-shot": "LiteMedSAM zero-shot",
    "medsa": "Med-SA adapters",
    "decoder": "decoder-only fine-tuning",
    "full": "full fine-tuning",
}

SUMMARY_COLUMNS = (
    "dataset", "method", "setting", "n_cases", "repeats", "trainable_params", "total_params", "train_seconds",
    "train_steps", "dice_mean", "dice_std", "iou_mean", "iou_std", "hd95_mean", "hd95_std", "empty_fraction",
)


@dataclass
class MethodResult:
    """Everything measured for one method on one dataset.

    Args:
        dataset: Dataset name (``"isic"``, ...).
        method: ``"zero-shot"``, ``"medsa"``, ``"decoder"`` or ``"full"``.
        trainable_params: Parameters updated by the training (0 for zero-shot).
        total_params: Parameters of the backbone (LiteMedSAM), the reference of the trainable share.
        train_seconds: Wall time of the training run (0 for zero-shot).
        train_steps: Optimizer steps (0 for zero-shot).
        evaluations: Prompt setting -> its :class:`EvaluationResult` on the validation cases.
    """

    dataset: str
    method: str
    trainable_params: int
    total_params: int
    train_seconds: float = 0.0
    train_steps: int = 0
    evaluations: dict[str, EvaluationResult] = field(default_factory=dict)


def average_row(result: EvaluationResult) -> dict:
    """The ``"average"`` row of ``result.summary()`` (one class here, so the class's own row)."""
    return result.summary()[-1]


def empty_fraction(result: EvaluationResult) -> float:
    """Share of predictions (cases x repeats) that were empty, i.e. whose HD95 is infinite; NaN without records."""
    if not result.records:
        return math.nan
    return sum(math.isinf(r["hd95"]) for r in result.records) / len(result.records)


def format_mean_std(mean: float, std: float, scale: float = 1.0, digits: int = 1) -> str:
    """``"85.3 ± 1.2"``; ``"inf"`` for an infinite mean (its std is undefined), ``"n/a"`` for NaN."""
    if math.isnan(mean):
        return "n/a"
    if math.isinf(mean):
        return "inf"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def format_params(trainable: int, total: int) -> str:
    """``"209,568 (2.1%)"``: trainable parameters and their share of the model's."""
    if trainable == 0:
        return "0"
    return f"{trainable:,} ({100.0 * trainable / total:.1f}%)"


def overview_table(results: Sequence[MethodResult], settings: Sequence[str]) -> str:
    """Markdown: one row per dataset and method, the Dice (%) of each prompt setting, params and training time."""
    header = ["dataset", "method", "trainable params", "train time (s)"] + [
        f"Dice {SETTING_LABELS.get(s, s)}" for s in settings
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 4 + "---:|" * len(settings)]
    for res in results:
        cells = [res.dataset, METHOD_LABELS.get(res.method, res.method),
                 format_params(res.trainable_params, res.total_params), f"{res.train_seconds:.0f}"]
        for setting in settings:
            row = average_row(res.evaluations[setting]) if setting in res.evaluations else None
            cells.append(format_mean_std(row["dice_mean"], row["dice_std"], 100.0) if row else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def detail_table(results: Sequence[MethodResult], settings: Sequence[str]) -> str:
    """Markdown: one row per dataset, method and prompt setting with Dice, IoU (%), HD95 (px) and empty share."""
    lines = [
        "| dataset | method | setting | n | Dice (%) | IoU (%) | HD95 (px) | empty |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        for setting in settings:
            if setting not in res.evaluations:
                continue
            evaluation = res.evaluations[setting]
            row = average_row(evaluation)
            cells = [
                res.dataset, METHOD_LABELS.get(res.method, res.method), SETTING_LABELS.get(setting, setting),
                str(row["n_cases"]), format_mean_std(row["dice_mean"], row["dice_std"], 100.0),
                format_mean_std(row["iou_mean"], row["iou_std"], 100.0),
                format_mean_std(row["hd95_mean"], row["hd95_std"]), f"{100.0 * empty_fraction(evaluation):.0f}%",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_rows(results: Sequence[MethodResult]) -> list[dict]:
    """One flat dict per dataset, method and setting with the keys of ``SUMMARY_COLUMNS``."""
    rows = []
    for res in results:
        for setting, evaluation in res.evaluations.items():
            row = average_row(evaluation)
            rows.append({
                "dataset": res.dataset, "method": res.method, "setting": setting, "n_cases": row["n_cases"],
                "repeats": len(evaluation.seeds), "trainable_params": res.trainable_params,
                "total_params": res.total_params, "train_seconds": round(res.train_seconds, 2),
                "train_steps": res.train_steps, "empty_fraction": empty_fraction(evaluation),
                **{k: row[k] for k in SUMMARY_COLUMNS if k.endswith(("_mean", "_std"))},
            })
    return rows


def write_outputs(results: Sequence[MethodResult], settings: Sequence[str], out_dir: str | Path, header: str) -> Path:
    """Writes ``results.md`` (``header`` + both tables), ``summary.csv`` and ``<dataset>/<method>/<setting>.csv``.

    Returns:
        The path of ``results.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for res in results:
        for setting, evaluation in res.evaluations.items():
            evaluation.write_csv(out / res.dataset / res.method / f"{setting}.csv")
    with (out / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(SUMMARY_COLUMNS))
        writer.writeheader()
        writer.writerows(summary_rows(results))
    markdown = out / "results.md"
    markdown.write_text(
        f"{header}\n\n## Dice by prompt setting\n\n{overview_table(results, settings)}\n"
        f"## All metrics\n\n{detail_table(results, settings)}"
    )
    return markdown


__all__ = [
    "METHOD_LABELS",
    "SETTING_LABELS",
    "SUMMARY_COLUMNS",
    "MethodResult",
    "detail_table",
    "empty_fraction",
    "format_mean_std",
    "format_params",
    "overview_table",
    "summary_rows",
    "write_outputs",
]
