"""Exports of a session: the mask (PNG at the original size, or NIfTI in the input volume's geometry) and the
prompts as the JSON file that ``peft-medsa predict --prompts`` replays.

Prompts JSON (points ``(x, y)`` original pixels, boxes XYXY):

    {"image": "scan.png", "points": [[x, y, label], ...], "box": [x0, y0, x1, y1] | null}

for a volume the points carry their slice, ``[x, y, z, label]``, and a box drawn on one slice is the 3D box
``[x0, y0, z, x1, y1, z]`` (``predict`` takes one box per volume). ``"slices"`` records every slice's prompts
and the chosen candidate, for reference.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .backend import UserError, save_label_volume, save_png
from .controller import AppState

__all__ = ["export_mask", "export_prompts", "prompts_record"]


def _stem(state: AppState) -> str:
    name = state.document.name
    for suffix in (".nii.gz", ".nii", ".zip", ".dcm", ".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def export_mask(state: AppState, folder: str | Path) -> Path:
    """Writes ``<stem>_mask.png`` (0 / 255, the image's original size) or ``<stem>_mask.nii.gz`` (1 inside, the
    input's affine and header; slices without prompts are 0) into ``folder``; returns its path.

    Raises:
        UserError: nothing is open or no slice has a mask yet.
    """
    if state.document is None or not state.session.masks:
        raise UserError("nothing to export: open an image and prompt it first")
    folder = Path(folder)
    if state.document.is_volume:
        labels = np.zeros((state.document.depth, *state.document.size), dtype=np.uint8)
        for z, mask in state.session.masks.items():
            labels[z] = mask
        return save_label_volume(folder / f"{_stem(state)}_mask.nii.gz", labels, state.document.volume)
    mask = state.session.masks[0]
    return save_png(mask.astype(np.uint8) * 255, folder / f"{_stem(state)}_mask.png")


def prompts_record(state: AppState) -> dict[str, Any]:
    """The session's prompts as a JSON-able dict (format in the module docstring)."""
    if state.document is None or not state.session.prompted_slices():
        raise UserError("no prompts to export: click on the image first")
    volume, session = state.document.is_volume, state.session
    points, boxes, slices = [], [], {}
    for z in session.prompted_slices():
        prompts = session.on(z)
        for (x, y), label in zip(prompts.points, prompts.labels):
            points.append([x, y, z, label] if volume else [x, y, label])
        if prompts.box is not None:
            x0, y0, x1, y1 = prompts.box
            boxes.append([x0, y0, z, x1, y1, z] if volume else [x0, y0, x1, y1])
        slices[str(z)] = {
            "points": [list(p) for p in prompts.points],
            "labels": list(prompts.labels),
            "box": list(prompts.box) if prompts.box is not None else None,
            "candidate": session.choice.get(z, 0),
        }
    record = {"image": state.document.name, "adapter": state.adapter, "window": state.window, "points": points}
    record["box"] = boxes[0] if len(boxes) == 1 and not (volume and points) else None
    if boxes and record["box"] is None:
        record["note"] = "predict takes clicks or one 3D box per volume: it replays the clicks; see 'slices'"
    record["slices"] = slices
    return record


def export_prompts(state: AppState, folder: str | Path) -> Path:
    """Writes ``<stem>_prompts.json`` (atomically) into ``folder``; returns its path."""
    record = prompts_record(state)
    path = Path(folder) / f"{_stem(state)}_prompts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        temporary.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
