"""What each action on the page does to one user's `AppState`, with no UI code (the Gradio layer calls these).

Every action either succeeds or leaves the state as it was and raises `UserError` with a readable message: a bad
upload, a click outside the image or an adapter that fails to load never loses the earlier prompts or masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backend import ZERO_SHOT, Segmenter, UserError, check_points, draw_overlay
from .document import WINDOWS, Document, open_document
from .session import Session

__all__ = ["MODES", "AppController", "AppState"]

MODES = ("positive click", "negative click", "box (two corners)")
"""What a click on the image adds."""


@dataclass
class AppState:
    """One browser session: the open document, its prompts and masks, and the view settings."""

    document: Document | None = None
    session: Session = field(default_factory=Session)
    z: int = 0
    window: str = next(iter(WINDOWS))
    adapter: str = ZERO_SHOT


class AppController:
    """The app's actions on an `AppState`, through a shared `Segmenter` (models and embedding cache)."""

    def __init__(self, segmenter: Segmenter, default_adapter: str | None = None) -> None:
        self.segmenter = segmenter
        adapters = segmenter.adapters
        self.default_adapter = default_adapter or (adapters[1] if len(adapters) > 1 else ZERO_SHOT)

    def new_state(self) -> AppState:
        """A fresh state on the default adapter (the first loaded one, else zero-shot)."""
        return AppState(adapter=self.default_adapter)

    # -- inference through the segmenter ----------------------------------------------------------------------------
    def _require_document(self, state: AppState) -> Document:
        if state.document is None:
            raise UserError("no image: open an image or a volume first")
        return state.document

    def _segment(self, state: AppState, z: int, adapter: str | None = None, window: str | None = None) -> tuple:
        """Candidates of slice ``z``: ``(masks (K, H, W), scores (K,), labels)``; ``None`` without prompts."""
        document = self._require_document(state)
        prompts = state.session.on(z)
        if prompts.is_empty:
            return None
        adapter, window = adapter or state.adapter, window or state.window
        self.segmenter.set_image((document.key, z, window), document.slice_image(z, window), adapter)
        points, labels, box = prompts.arrays()
        masks, scores = self.segmenter.predict(points, labels, box)
        names = [f"single-mask output (predicted IoU {scores[0]:.2f})"]
        if prompts.is_single_click:  # ambiguous: offer SAM's three candidates too
            extra_masks, extra_scores = self.segmenter.predict(points, labels, box, multimask=True)
            masks, scores = np.concatenate([masks, extra_masks]), np.concatenate([scores, extra_scores])
            names += [f"candidate {i + 1} (predicted IoU {s:.2f})" for i, s in enumerate(extra_scores)]
        return masks, scores, names

    def _store(self, state: AppState, results: dict[int, tuple | None]) -> None:
        for z, result in results.items():
            if result is None:
                state.session.candidates.pop(z, None)
                state.session.masks.pop(z, None)
                state.session.choice.pop(z, None)
                continue
            choice = state.session.choice.get(z, 0)
            choice = choice if choice < len(result[0]) else 0
            state.session.candidates[z], state.session.choice[z] = result, choice
            state.session.masks[z] = result[0][choice]

    def _refresh_all(self, state: AppState, adapter: str, window: str) -> None:
        """Recomputes every prompted slice with ``adapter`` / ``window``; commits only if all succeed."""
        results = {z: self._segment(state, z, adapter, window) for z in state.session.prompted_slices()}
        state.adapter, state.window = adapter, window
        self._store(state, results)

    # -- actions ----------------------------------------------------------------------------------------------------
    def open(self, state: AppState, path: str | Path, name: str | None = None) -> str:
        """Opens an uploaded file; the previous document and prompts stay if it cannot be read."""
        document = open_document(path, name)
        state.document, state.session, state.z = document, Session(), document.depth // 2
        shape = "x".join(str(s) for s in (document.depth, *document.size)) if document.is_volume else None
        what = f"volume {shape} (D x H x W)" if shape else f"image {document.size[1]} x {document.size[0]} px"
        return f"opened {document.name}: {what}"

    def click(self, state: AppState, x: float, y: float, mode: str) -> str:
        """A click at ``(x, y)`` original pixels of the current slice: a point or a box corner."""
        document = self._require_document(state)
        if mode not in MODES:
            raise UserError(f"mode {mode!r}; expected one of {list(MODES)}")
        try:
            check_points([[x, y]], [1], document.size)
        except ValueError as err:
            raise UserError(f"click ignored: {err}") from None
        session, z = state.session, state.z
        if mode == MODES[2]:
            session.add_corner(z, x, y)
            pending = session.on(z).pending_corner
            if pending is not None:
                return f"box: first corner at ({x:.0f}, {y:.0f}); click the opposite corner"
        else:
            session.add_point(z, x, y, 1 if mode == MODES[0] else 0)
        try:
            self._store(state, {z: self._segment(state, z)})
        except Exception:
            session.rollback()
            raise
        return self.describe(state)

    def undo(self, state: AppState) -> str:
        """Undoes the last prompt change (any slice)."""
        self._require_document(state)
        before = state.session.prompts
        if not state.session.undo():
            return "nothing to undo"
        changed = set(before) | set(state.session.prompts)
        try:
            self._store(state, {z: self._segment(state, z) for z in sorted(changed)})
        except Exception:
            state.session.history.append(state.session.prompts)
            state.session.prompts = before
            raise
        return "undone; " + self.describe(state)

    def clear(self, state: AppState) -> str:
        """Removes the prompts and mask of the current slice (undo brings them back)."""
        self._require_document(state)
        if state.z in state.session.prompts:
            state.session.clear(state.z)
            self._store(state, {state.z: None})
        return f"cleared slice {state.z}" if state.document.is_volume else "cleared"

    def set_adapter(self, state: AppState, adapter: str) -> str:
        """Switches the adapter, keeping the prompts; masks are recomputed."""
        if adapter not in self.segmenter.adapters:
            raise UserError(f"adapter {adapter!r} is not loaded; choose one of {self.segmenter.adapters}")
        if state.document is None:
            state.adapter = adapter
            return f"adapter: {adapter}"
        self._refresh_all(state, adapter, state.window)
        return f"adapter: {adapter}; " + self.describe(state)

    def set_window(self, state: AppState, window: str) -> str:
        """Changes the window preset (the slices the model sees), keeping the prompts."""
        if window not in WINDOWS:
            raise UserError(f"window {window!r}; expected one of {list(WINDOWS)}")
        if state.document is None or not state.document.needs_window:
            state.window = window
            return f"window: {window}"
        self._refresh_all(state, state.adapter, window)
        return f"window: {window}; " + self.describe(state)

    def set_slice(self, state: AppState, z: int) -> str:
        """Shows slice ``z``."""
        document = self._require_document(state)
        z = int(z)
        if not 0 <= z < document.depth:
            raise UserError(f"slice {z} outside the volume; expected 0..{document.depth - 1}")
        state.z = z
        return self.describe(state)

    def choose(self, state: AppState, index: int) -> str:
        """Picks candidate ``index`` of the current slice as its mask."""
        candidates = state.session.candidates.get(state.z)
        if candidates is None or not 0 <= index < len(candidates[0]):
            raise UserError("no such candidate: click once on the image to get candidates")
        state.session.choice[state.z] = index
        state.session.masks[state.z] = candidates[0][index]
        return self.describe(state)

    def add_adapter(self, state: AppState, spec: str) -> str:
        """Loads ``NAME=DIR_OR_HUB_ID`` from the page; makes it active and recomputes."""
        from .models import parse_adapter_spec

        name, source = parse_adapter_spec(spec)
        self.segmenter.add_adapter(name, source)
        return f"loaded adapter {name!r} from {source}; " + self.set_adapter(state, name)

    # -- views ------------------------------------------------------------------------------------------------------
    def describe(self, state: AppState) -> str:
        """One line: the current slice's prompts and mask."""
        if state.document is None:
            return "open an image or a volume"
        prompts, mask = state.session.on(state.z), state.session.masks.get(state.z)
        where = f"slice {state.z}: " if state.document.is_volume else ""
        box = ", a box" if prompts.box is not None else ""
        area = f"mask {int(mask.sum())} px" if mask is not None else "no mask"
        return f"{where}{len(prompts.points)} click(s){box}; {area} ({state.adapter})"

    def render(self, state: AppState) -> np.ndarray | None:
        """The current slice with its mask, clicks and box (uint8 ``(H, W, 3)``, original size)."""
        if state.document is None:
            return None
        image = state.document.slice_image(state.z, state.window)
        prompts = state.session.on(state.z)
        mask = state.session.masks.get(state.z, np.zeros(state.document.size, dtype=bool))
        points, labels, box = prompts.arrays()
        if prompts.pending_corner is not None and box is None:
            box = np.repeat(np.asarray(prompts.pending_corner), 2)  # a dot until the opposite corner is clicked
        return np.asarray(draw_overlay(image, mask, points, labels, box))

    def candidate_labels(self, state: AppState) -> tuple[list[str], str | None]:
        """The current slice's candidate names and the chosen one."""
        candidates = state.session.candidates.get(state.z)
        if candidates is None:
            return [], None
        return list(candidates[2]), candidates[2][state.session.choice.get(state.z, 0)]
