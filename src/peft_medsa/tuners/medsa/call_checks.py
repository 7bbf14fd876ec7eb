"""Checks of the per-call options of a Med-SA model's forward that would otherwise be misread silently.

- ``adapter_names`` must hold exactly one name per image of the batch (a shorter list used to be spread over the
  batch, an empty one to switch every adapter off);
- ``num_slices`` is only for models with SD-Trans adapters (elsewhere it used to be ignored);

They run inside every forward, so they read shapes and Python values only, never tensor values (no host-device
synchronisation): that ``pixel_values`` are finite is checked at the API boundaries
(``peft_medsa.prompt_checks.check_model_call``, the predictor, the volume helper, the trainer's inputs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["check_call_options"]


def _batch_size(args: tuple, kwargs: dict) -> int | None:
    for value in (args[0] if args else None, kwargs.get("pixel_values"), kwargs.get("image_embeddings")):
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            return int(value.shape[0])
    return None


def check_call_options(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """Refuses ``adapter_names`` of the wrong length and ``num_slices`` without SD-Trans.

    Raises:
        ValueError: naming the option, what was given and what was expected.
    """
    names: Any = kwargs.get("adapter_names")
    batch = _batch_size(args, kwargs)
    if names is not None and not isinstance(names, str) and batch is not None and len(names) != batch:
        raise ValueError(
            f"adapter_names has {len(names)} name(s) for a batch of {batch} image(s); give exactly one adapter name "
            "per image ('__base__' for no adapter)"
        )
    if kwargs.get("num_slices") is not None:
        if not any("num_slices" in getattr(m, "call_kwargs", ()) for m in model.modules()):
            raise ValueError(
                "num_slices is for SD-Trans adapters (sd_trans=True), and this model has none: call it without "
                "num_slices to segment the slices one by one"
            )
