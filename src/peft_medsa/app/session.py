"""One user's prompts: clicks and a box per slice, with an undo history (no model, no UI).

Points are ``(x, y)`` original pixels with label 1 (positive) or 0 (negative); a box is XYXY. A box is drawn with
two clicks (opposite corners); while only its first corner is set, `SlicePrompts.pending_corner` holds it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Session", "SlicePrompts"]


@dataclass
class SlicePrompts:
    """The prompts on one slice (or on a 2D image)."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    pending_corner: tuple[float, float] | None = None

    @property
    def is_empty(self) -> bool:
        """No click and no box (a pending corner alone does not prompt)."""
        return not self.points and self.box is None

    @property
    def is_single_click(self) -> bool:
        """Exactly one click and no box: the ambiguous case where SAM's three candidates are offered."""
        return len(self.points) == 1 and self.box is None

    def arrays(self) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """``points (N, 2)``, ``labels (N,)`` and ``box (4,)`` as arrays (``None`` where absent)."""
        points = np.asarray(self.points, dtype=np.float64) if self.points else None
        labels = np.asarray(self.labels, dtype=np.int64) if self.points else None
        box = np.asarray(self.box, dtype=np.float64) if self.box is not None else None
        return points, labels, box


@dataclass
class Session:
    """Prompts and results of one browser session on one document.

    Attributes:
        prompts: ``{slice: SlicePrompts}``.
        masks: ``{slice: (H, W) bool}`` the chosen mask of each prompted slice.
        candidates: ``{slice: (masks (K, H, W), scores (K,), labels [str])}`` for the current prompts.
        choice: ``{slice: index}`` of the chosen candidate.
        history: snapshots of ``prompts`` before each change (for undo).
    """

    prompts: dict[int, SlicePrompts] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    candidates: dict[int, tuple] = field(default_factory=dict)
    choice: dict[int, int] = field(default_factory=dict)
    history: list[dict[int, SlicePrompts]] = field(default_factory=list)

    def on(self, z: int) -> SlicePrompts:
        """The prompts of slice ``z`` (empty if none)."""
        return self.prompts.get(z, SlicePrompts())

    def _edit(self, z: int) -> SlicePrompts:
        self.history.append(copy.deepcopy(self.prompts))
        self.prompts[z] = copy.deepcopy(self.on(z))
        return self.prompts[z]

    def add_point(self, z: int, x: float, y: float, label: int) -> None:
        """Adds a click (label 1 positive, 0 negative) on slice ``z``."""
        prompts = self._edit(z)
        prompts.points.append((float(x), float(y)))
        prompts.labels.append(int(label))

    def add_corner(self, z: int, x: float, y: float) -> None:
        """First call: the box's first corner; second call: the opposite corner, which sets (replaces) the box."""
        prompts = self._edit(z)
        if prompts.pending_corner is None:
            prompts.pending_corner = (float(x), float(y))
            return
        (x0, y0), prompts.pending_corner = prompts.pending_corner, None
        prompts.box = (min(x0, x), min(y0, y), max(x0, x), max(y0, y))

    def undo(self) -> bool:
        """Restores the prompts before the last change; ``False`` when there is nothing to undo."""
        if not self.history:
            return False
        self.prompts = self.history.pop()
        return True

    def clear(self, z: int) -> None:
        """Removes the prompts (and the mask) of slice ``z``; undo brings the prompts back."""
        self._edit(z)
        del self.prompts[z]

    def rollback(self) -> None:
        """Drops the last change without keeping it for redo (a prompt that could not be decoded)."""
        if self.history:
            self.prompts = self.history.pop()

    def prompted_slices(self) -> list[int]:
        """Slices with at least one click or a box, sorted."""
        return sorted(z for z, p in self.prompts.items() if not p.is_empty)
