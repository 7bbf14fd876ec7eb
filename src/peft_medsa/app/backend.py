"""The app's one seam onto :mod:`peft_medsa.inference`: every predictor, reader and writer the app uses is reached
through this module, so that a rename in ``inference/`` is a one-line fix here.

`Segmenter` holds one ``MedSAPredictor`` for zero-shot prediction (the plain model) and one for the adapters (a
``PeftModel`` whose active adapter is switched), plus a least-recently-used cache of image embeddings keyed by
``(image key, adapter)``: an image, slice or adapter is embedded once, every later prompt only runs the decoder.
Points are ``(x, y)`` and boxes XYXY in the ORIGINAL pixels of the image given to `Segmenter.set_image`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from ..inference.commands import UserError, load_model
from ..inference.overlay import draw_overlay, save_png, to_display_uint8
from ..inference.predictor import MedSAPredictor, check_box, check_points
from ..inference.volume_io import LoadedVolume, load_volume, save_label_volume, volume_to_uint8

__all__ = [
    "ZERO_SHOT",
    "LoadedVolume",
    "Segmenter",
    "UserError",
    "check_box",
    "check_points",
    "draw_overlay",
    "load_model",
    "load_volume",
    "save_label_volume",
    "save_png",
    "to_display_uint8",
    "volume_to_uint8",
]

ZERO_SHOT = "none: zero-shot"
"""The adapter choice that runs the plain model (no adapter)."""

# The predictor's per-image state: what `set_image` computes. Saved and restored to reuse an embedding.
_IMAGE_STATE = ("pixel_values", "image_embeddings", "resize_info", "_embedded_with")


class Segmenter:
    """Prompted masks on the current image with the zero-shot model or one of the adapters.

    Args:
        base_model: the plain SAM-like model (zero-shot).
        adapted_model: a ``PeftModel`` holding the adapters (its own copy of the base weights), or ``None``.
        cache_size: image embeddings kept (per image key and adapter).
        adapter_loader: ``(model_or_None, name, source) -> PeftModel`` that loads one more adapter (used by
            `add_adapter`); it receives ``None`` when no adapter is loaded yet.
    """

    def __init__(
        self,
        base_model: Any,
        adapted_model: Any = None,
        *,
        cache_size: int = 32,
        adapter_loader: Callable[[Any, str, str], Any] | None = None,
    ) -> None:
        self._zero_shot = MedSAPredictor(base_model)
        self._adapted = MedSAPredictor(adapted_model) if adapted_model is not None else None
        self._cache: OrderedDict[tuple, tuple] = OrderedDict()
        self._cache_size = cache_size
        self._adapter_loader = adapter_loader
        self._current: tuple | None = None
        self.embed_count = 0
        """How many image embeddings were computed (cache misses)."""

    @property
    def adapters(self) -> list[str]:
        """The adapter choices: `ZERO_SHOT` first, then the loaded adapters' names."""
        names = list(self._adapted.model.peft_config) if self._adapted is not None else []
        return [ZERO_SHOT, *names]

    def _predictor(self, adapter: str) -> MedSAPredictor:
        if adapter == ZERO_SHOT:
            return self._zero_shot
        if adapter not in self.adapters:
            raise UserError(f"adapter {adapter!r} is not loaded; choose one of {self.adapters}")
        self._adapted.set_adapter(adapter)
        return self._adapted

    def set_image(self, key: Hashable, image: np.ndarray, adapter: str) -> None:
        """Makes ``image`` (known as ``key``) current for ``adapter``, embedding it only if not cached."""
        predictor = self._predictor(adapter)
        cache_key = (key, adapter)
        if self._current == cache_key:
            return
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            for name, value in zip(_IMAGE_STATE, self._cache[cache_key]):
                setattr(predictor, name, value)
        else:
            predictor.set_image(image)
            self.embed_count += 1
            self._cache[cache_key] = tuple(getattr(predictor, name) for name in _IMAGE_STATE)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._current = cache_key

    def predict(
        self, points: Any, labels: Any, box: Any, *, multimask: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks ``(K, H, W)`` bool and predicted IoU ``(K,)`` on the current image (``K`` = 3 with ``multimask``)."""
        if self._current is None:
            raise UserError("no image: open an image or a volume first")
        predictor = self._predictor(self._current[1])
        masks, scores, _ = predictor.predict(
            point_coords=points if points is not None and len(points) else None,
            point_labels=labels if points is not None and len(points) else None,
            box=box,
            multimask_output=multimask,
        )
        return np.asarray(masks, dtype=bool), np.asarray(scores, dtype=np.float32)

    def add_adapter(self, name: str, source: str) -> None:
        """Loads adapter ``name`` from ``source`` (folder or Hub id); on failure the loaded ones stay as they were.

        Raises:
            UserError: a bad name, a name already loaded, or a folder / id that does not load onto this model.
        """
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise UserError(f"adapter name {name!r}: expected letters, digits, '-' or '_'")
        if name in self.adapters:
            raise UserError(f"adapter {name!r} is already loaded")
        if self._adapter_loader is None:
            raise UserError("this app cannot load adapters at run time")
        model = self._adapted.model if self._adapted is not None else None
        active = list(model.active_adapters) if model is not None else None
        try:
            loaded = self._adapter_loader(model, name, source)
        except Exception:
            if model is not None:
                if name in model.peft_config:
                    model.delete_adapter(name)
                model.set_adapter(active[0] if len(active) == 1 else active)
            self._current = None
            raise
        if self._adapted is None:
            self._adapted = MedSAPredictor(loaded)
        self._current = None
