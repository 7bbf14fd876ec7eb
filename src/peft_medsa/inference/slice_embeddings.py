"""Image embeddings of a volume's slices, computed in chunks so that SD-Trans sees each slice's neighbours.

SD-Trans (Wu et al., section 3.3) attends across slices inside the image encoder, so a slice's embedding depends on
the slices fed with it. `SliceEmbeddings` feeds a ``(D, H, W[, 3])`` volume in chunks of ``chunk_size`` consecutive
slices (``num_slices = chunk_size``) that overlap by ``overlap`` slices; a slice covered by several chunks gets the
mean of their embeddings. Chunks are computed lazily, when a slice is first asked for, so prompting a few slices of a
long volume embeds only the chunks around them, and peak memory is set by ``chunk_size``, not by the depth. A model
without SD-Trans layers embeds each slice on its own (chunks are then plain batches without overlap).

Each slice is preprocessed as a 2D image is (:func:`peft_medsa.data.transforms.model_pixels`: long side to the model
input size ``S``, normalised, padded at the bottom / right), so the embedding of a slice by a 2D model equals the
:class:`~peft_medsa.inference.predictor.MedSAPredictor` embedding of that slice as an image.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import torch

from ..data.transforms import model_pixels
from ..model_input import model_input_size, resolve_normalization

__all__ = ["SliceEmbeddings", "chunk_starts", "num_slices_context", "uses_num_slices"]


def chunk_starts(depth: int, chunk_size: int, overlap: int) -> list[int]:
    """First slice of each chunk: chunks of ``min(chunk_size, depth)`` slices, consecutive ones sharing ``overlap``
    slices (the last chunk is aligned with the end of the volume, so it may share more)."""
    size = min(chunk_size, depth)
    step = chunk_size - overlap
    starts = list(range(0, depth - size + 1, step))
    if starts[-1] + size < depth:
        starts.append(depth - size)
    return starts


def uses_num_slices(model: torch.nn.Module) -> bool:
    """Whether ``model`` has SD-Trans layers, i.e. takes ``num_slices`` in its forward."""
    return any("num_slices" in getattr(module, "call_kwargs", ()) for module in model.modules())


def _inject(module: torch.nn.Module, args: tuple, kwargs: dict, extra: dict[str, Any]):
    kwargs.update(extra)
    return args, kwargs


@contextmanager
def num_slices_context(model: torch.nn.Module, batch_size: int, num_slices: int) -> Iterator[None]:
    """Inside the block, SD-Trans layers treat a batch of ``batch_size`` images as volumes of ``num_slices`` slices.

    ``model(pixel_values=..., num_slices=D)`` does this for a full forward; the image encoder alone
    (``get_image_embeddings``) has no such argument, so this context gives it to the layers that take it.
    """
    from ..tuners.sd_trans.layout import check_num_slices

    layout = check_num_slices(num_slices, batch_size)
    handles = [
        module.register_forward_pre_hook(partial(_inject, extra={"num_slices": layout}), with_kwargs=True)
        for module in model.modules()
        if "num_slices" in getattr(module, "call_kwargs", ())
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class SliceEmbeddings:
    """Lazy, chunked image embeddings of the slices of one volume (module docstring).

    Args:
        model: a SAM-like model (``SamModel``, LiteMedSAM, or a ``PeftModel`` on either, with or without SD-Trans).
        slices: ``(D, H, W)`` or ``(D, H, W, 3)`` images (uint8, or floats mapped as `model_pixels` maps them).
        normalization: one of :data:`peft_medsa.model_input.NORMALIZATIONS`.
        chunk_size: slices per encoder call (and per depth-attention context).
        overlap: slices shared by consecutive chunks (SD-Trans only); their embeddings are averaged.

    Call ``embeddings(z)`` for the ``(1, C, h, w)`` embedding of slice ``z``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        slices: np.ndarray,
        *,
        normalization: str = "auto",
        chunk_size: int = 16,
        overlap: int = 4,
    ) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got chunk_size={chunk_size!r}")
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < chunk_size:
            raise ValueError(f"overlap must be an integer in [0, chunk_size={chunk_size}), got overlap={overlap!r}")
        self.model = model
        self.slices = slices
        self.normalization = resolve_normalization(model, normalization)
        self.size = model_input_size(model)
        self.sd_trans = uses_num_slices(model)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        depth = len(slices)
        self.starts = chunk_starts(depth, chunk_size, overlap if self.sd_trans else 0)
        self.chunk = min(chunk_size, depth)
        self._sum: dict[int, torch.Tensor] = {}
        self._count = np.zeros(depth, dtype=np.int64)
        self._done: set[int] = set()

    def covering(self, z: int) -> list[int]:
        """Indices of the chunks that hold slice ``z``."""
        return [i for i, start in enumerate(self.starts) if start <= z < start + self.chunk]

    def pixels(self, start: int, stop: int) -> torch.Tensor:
        """``(stop - start, 3, S, S)`` model inputs of slices ``start..stop-1``."""
        batch = [model_pixels(self.slices[z], self.size, self.normalization)[0] for z in range(start, stop)]
        return torch.cat(batch).to(self.device, self.dtype)

    def encode(self, start: int, stop: int) -> torch.Tensor:
        """``(stop - start, C, h, w)`` embeddings of slices ``start..stop-1`` fed together (one SD-Trans context).

        Subclasses may override it (e.g. to reuse cached features of a frozen part of the encoder)."""
        pixels = self.pixels(start, stop)
        if self.sd_trans:
            with num_slices_context(self.model, len(pixels), len(pixels)):
                return self.model.get_image_embeddings(pixels)
        return self.model.get_image_embeddings(pixels)

    @torch.no_grad()
    def _embed_chunk(self, index: int) -> None:
        start = self.starts[index]
        embeddings = self.encode(start, start + self.chunk)
        for offset, embedding in enumerate(embeddings.float().cpu()):
            z = start + offset
            self._sum[z] = self._sum[z] + embedding if z in self._sum else embedding.clone()
            self._count[z] += 1
        self._done.add(index)

    def __call__(self, z: int) -> torch.Tensor:
        """``(1, C, h, w)`` embedding of slice ``z`` (mean over the chunks that hold it)."""
        if not 0 <= z < len(self.slices):
            raise IndexError(f"slice {z} outside the volume's slices 0..{len(self.slices) - 1}")
        for index in self.covering(z):
            if index not in self._done:
                self._embed_chunk(index)
        return (self._sum[z] / self._count[z])[None]
