"""The metrics log of a run: ``metrics.jsonl`` (one JSON row per event), ``metrics.csv`` and ``training_curve.png``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"
PLOT_NAME = "training_curve.png"


class MetricsLog:
    """Appends rows such as ``{"step": 3, "loss": 0.7, "lr": 1e-4}`` or ``{"step": 10, "val_dice": 0.8}``.

    Args:
        folder: The run folder.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / JSONL_NAME

    def rows(self) -> list[dict[str, Any]]:
        """All rows in order."""
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def append(self, row: dict[str, Any]) -> None:
        """Adds one row (flushed at once, so a killed run keeps its log)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row, sort_keys=True) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drops rows of steps after ``step`` (written by a killed run after its last checkpoint)."""
        rows = [r for r in self.rows() if r.get("step", 0) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        tmp.replace(self.path)

    def write_csv(self) -> Path:
        """Writes all rows to ``metrics.csv`` (union of the keys as columns, ``step`` first)."""
        rows = self.rows()
        columns = ["step"] + sorted({k for r in rows for k in r} - {"step"})
        path = self.folder / CSV_NAME
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def plot(self) -> Path:
        """Training loss (and validation Dice on a second axis) against the step, saved as ``training_curve.png``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r and math.isfinite(r["loss"])]
        val = [(r["step"], r["val_dice"]) for r in rows if "val_dice" in r]
        fig, ax = plt.subplots(figsize=(6, 4))
        if train:
            ax.plot(*zip(*train), label="train loss (Dice + BCE)", color="tab:blue")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        if val:
            ax2 = ax.twinx()
            ax2.plot(*zip(*val), "o-", label="validation Dice", color="tab:orange")
            ax2.set_ylabel("Dice")
            ax2.set_ylim(0, 1)
        ax.set_title("Med-SA training")
        fig.tight_layout()
        path = self.folder / PLOT_NAME
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


__all__ = ["CSV_NAME", "JSONL_NAME", "PLOT_NAME", "MetricsLog"]
