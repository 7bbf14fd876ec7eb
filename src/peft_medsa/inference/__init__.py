"""Inference for users, in layers (as segment-anything: model -> predictor -> automatic generator):

- :class:`MedSAPredictor` (``predictor.py``): one 2D image; ``set_image`` once, ``predict`` per prompt (clicks, box,
  ``mask_input`` for refinement), everything in original pixels.
- :class:`VolumePredictor` (``volume_predictor.py``): a volume read with its affine (``volume_io.py``), prompts in the
  one volume format ``{z: Prompt}`` (``volume_prompts.py``), slices embedded in overlapping chunks with SD-Trans
  context when the adapter has it (``slice_embeddings.py``), propagation to unprompted slices, labels written with the
  input's affine.
- "segment everything" (``everything.py``) on an image predictor (a 2D image or one slice of a volume).

The CLI (``commands.py``), the evaluation protocol and the app call these layers and hold no inference logic.
"""

from __future__ import annotations

from .everything import Instance, evaluate_everything, label_map, predictor_decode_fn, segment_everything
from .predictor import MedSAPredictor, cached_predict_fn
from .volume_io import LoadedVolume, load_volume, save_label_volume, volume_to_uint8
from .volume_predictor import VolumePredictor, segment_volume
from .volume_prompts import VolumePrompts, box3d_prompts, clicks_to_prompts, every_kth, prompts_from_mask

__all__ = [
    "Instance",
    "LoadedVolume",
    "MedSAPredictor",
    "VolumePredictor",
    "VolumePrompts",
    "box3d_prompts",
    "cached_predict_fn",
    "clicks_to_prompts",
    "evaluate_everything",
    "every_kth",
    "label_map",
    "load_volume",
    "predictor_decode_fn",
    "prompts_from_mask",
    "save_label_volume",
    "segment_everything",
    "segment_volume",
    "volume_to_uint8",
]
