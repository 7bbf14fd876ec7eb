"""Whole volumes (compatibility module): see :mod:`peft_medsa.inference.volume_predictor` for the API."""

from __future__ import annotations

from .slice_embeddings import chunk_starts, uses_num_slices
from .volume_predictor import VolumePredictor, segment_volume

__all__ = ["VolumePredictor", "chunk_starts", "segment_volume", "uses_num_slices"]
