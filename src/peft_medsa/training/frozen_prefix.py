"""Frozen-prefix cache: compute the frozen front of the image encoder once per training image.

Med-SA trains adapters and leaves SAM frozen. When the adapters sit only in the later encoder blocks (Table 7b of the
paper: blocks 17-32 of ViT-H keep most of the gain) or only in the mask decoder, everything in front of the first
trainable block computes the same tensor for an image at every step. This cache stores that tensor per training case
and runs only the trainable rest of the encoder (and the decoder) at each step: the results are the same as the full
forward (tested), the step is cheaper in proportion to the skipped blocks.

Both supported encoders share one layout, ``patch_embed`` (+ ``pos_embed``) -> ``layers`` -> ``neck``:
transformers' ``SamVisionEncoder`` (``layers`` are ViT blocks, ``(B, H, W, C)`` in and out) and the TinyViT encoder of
LiteMedSAM (``layers`` are stages). The cut is the first entry of ``layers`` holding a trainable parameter:

- no trainable encoder parameter at all: the cache holds the image embedding ``(C_out, h, w)`` itself;
- the first trainable entry is ``layers[k]``: the cache holds the input of ``layers[k]``, taken by a forward
  pre-hook on a normal encoder forward that stops there;
- ``patch_embed`` / ``pos_embed`` trainable (full fine-tuning): nothing is cached (:func:`FrozenPrefixCache.build`
  returns ``None``).

Memory is bounded by ``max_megabytes``: cases past that budget are recomputed at each step, never evicted.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import nn


class _StopForward(Exception):
    """Raised by the pre-hook once the cut's input is captured, to skip the rest of the encoder forward."""


def _trainable(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def _base_sam(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class FrozenPrefixCache:
    """Per-case cache of the frozen front of the image encoder.

    Args:
        model: The (PEFT-wrapped) SAM-like model; its ``vision_encoder`` has ``layers`` and ``neck``.
        start: Index of the first trainable entry of ``vision_encoder.layers``; ``len(layers) + 1`` caches the final
            image embedding (no trainable encoder part).
        max_megabytes: Budget of the stored tensors; further cases are computed at each step.

    Use :meth:`build`, which finds ``start`` (or returns ``None`` when nothing can be cached).
    """

    def __init__(self, model: nn.Module, start: int, max_megabytes: float) -> None:
        self.model = model
        self.encoder = _base_sam(model).vision_encoder
        self.start = start
        self.max_bytes = max_megabytes * 2**20
        self.used_bytes = 0
        self._store: dict[Hashable, torch.Tensor] = {}

    @classmethod
    def build(cls, model: nn.Module, max_megabytes: float = 2048.0) -> FrozenPrefixCache | None:
        """The cache for ``model``'s current trainable parameters, or ``None`` if its encoder trains from the stem
        (full fine-tuning), does not have the ``patch_embed`` / ``layers`` / ``neck`` layout, or the budget is 0."""
        encoder = getattr(_base_sam(model), "vision_encoder", None)
        layers = getattr(encoder, "layers", None)
        if encoder is None or layers is None or getattr(encoder, "neck", None) is None or max_megabytes <= 0:
            return None
        if _trainable(getattr(encoder, "patch_embed", None)):
            return None
        pos_embed = getattr(encoder, "pos_embed", None)
        if isinstance(pos_embed, nn.Parameter) and pos_embed.requires_grad:
            return None
        trainable = [i for i, layer in enumerate(layers) if _trainable(layer)]
        if trainable:
            start = trainable[0]
        elif _trainable(encoder.neck):
            start = len(layers)
        else:
            start = len(layers) + 1
        if start == 0:
            return None
        return cls(model, start, max_megabytes)

    @property
    def caches_embeddings(self) -> bool:
        """True when the whole encoder is frozen and the cache holds final image embeddings."""
        return self.start > len(self.encoder.layers)

    def __len__(self) -> int:
        return len(self._store)

    @torch.no_grad()
    def _prefix(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen part of the encoder on ``pixel_values`` ``(B, 3, S, S)``: the cut's input (or the embedding)."""
        if self.caches_embeddings:
            return self.encoder(pixel_values=pixel_values).last_hidden_state
        target = self.encoder.neck if self.start == len(self.encoder.layers) else self.encoder.layers[self.start]
        captured: list[torch.Tensor] = []

        def capture(module, args, kwargs):
            captured.append(args[0] if args else next(iter(kwargs.values())))
            raise _StopForward

        handle = target.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            self.encoder(pixel_values=pixel_values)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"the image encoder never reached its trainable part (layers[{self.start}])")
        return captured[0]

    def _suffix(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The trainable rest of the encoder, from the cut's input to the image embedding ``(B, C_out, h, w)``."""
        if self.caches_embeddings:
            return hidden_states
        for layer in self.encoder.layers[self.start :]:
            hidden_states = layer(hidden_states)
            if isinstance(hidden_states, tuple):
                hidden_states = hidden_states[0]
        return self.encoder.neck(hidden_states)

    def prefixes(self, keys: Sequence[Hashable], pixel_values: torch.Tensor) -> torch.Tensor:
        """The frozen front for a batch: cached per key, computed (and stored while the budget lasts) otherwise.

        Args:
            keys: One hashable key per image (the training case's index).
            pixel_values: ``(B, 3, S, S)`` model pixels of those images, only used for the missing keys.
        """
        missing = [i for i, key in enumerate(keys) if key not in self._store]
        computed = {}
        if missing:
            fresh = self._prefix(pixel_values[missing])
            for row, i in enumerate(missing):
                value = fresh[row].detach()
                computed[keys[i]] = value
                size = value.numel() * value.element_size()
                if self.used_bytes + size <= self.max_bytes:
                    self._store[keys[i]] = value.clone()
                    self.used_bytes += size
        return torch.stack([self._store[k] if k in self._store else computed[k] for k in keys])

    def image_embeddings(self, keys: Sequence[Hashable], pixel_values: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(B, C_out, h, w)`` equal to ``get_image_embeddings(pixel_values)``; gradients reach the
        trainable encoder part when grad mode is on."""
        return self._suffix(self.prefixes(keys, pixel_values))


__all__ = ["FrozenPrefixCache"]
