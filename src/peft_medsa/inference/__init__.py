"""Inference for users: interactive prediction, whole volumes, "segment everything" (see each module)."""

from __future__ import annotations

from .everything import Instance, evaluate_everything, label_map, predictor_decode_fn, segment_everything
from .predictor import MedSAPredictor
from .volume_io import box3d_prompts, load_volume, save_label_volume, segment_volume_2d

__all__ = [
    "Instance",
    "MedSAPredictor",
    "box3d_prompts",
    "evaluate_everything",
    "label_map",
    "load_volume",
    "predictor_decode_fn",
    "save_label_volume",
    "segment_everything",
    "segment_volume_2d",
]
