"""``peft-medsa app``: interactive segmentation in the browser (Gradio), a thin caller of the predictors.

Layers, each in its own module: `backend` (the one seam onto :mod:`peft_medsa.inference`: predictors, readers,
writers, and the embedding cache), `models` (base model + named adapters), `document` (what was opened), `session`
(prompts and undo), `controller` (the page's actions on one user's state), `export` (mask and prompts files),
`ui` (the Gradio page) and `launch` (the command). Gradio is imported only by `ui` and `launch` (the ``app``
extra: ``pip install "peft-medsa[app]"``).
"""

from __future__ import annotations

from .backend import ZERO_SHOT, Segmenter
from .controller import AppController, AppState
from .models import load_segmenter

__all__ = ["ZERO_SHOT", "AppController", "AppState", "Segmenter", "load_segmenter"]
