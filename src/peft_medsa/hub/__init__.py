"""Model cards for adapter folders and Hub helpers: push one adapter per task or organ, load them into one model."""

from __future__ import annotations

from .cards import load_template, render_model_card, write_model_card
from .push import load_organ_adapters, push_adapters_to_hub

__all__ = ["load_organ_adapters", "load_template", "push_adapters_to_hub", "render_model_card", "write_model_card"]
