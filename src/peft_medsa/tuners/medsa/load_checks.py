"""Loading an adapter either succeeds completely or leaves the model exactly as it was.

- A truncated or corrupt local weights file is refused when the adapter's config is read, before any layer is
  created (:func:`check_weights_file`, called by ``MedSAConfig.from_pretrained``).
- A weights file with missing or renamed tensors is refused, and the adapter layers just created are removed again,
  with the base model's ``requires_grad`` flags put back when no adapter is left (:func:`check_adapter_load`).
- Loading weights into an adapter name that already holds weights is refused (PEFT would replace them silently):
  ``delete_adapter`` first or choose another ``adapter_name``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["AdapterLoadError", "check_adapter_load", "check_weights_file", "discard_failed_adapter"]

WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterLoadError(ValueError):
    """An adapter could not be loaded; the model is unchanged. The message names the file or adapter and why."""


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            return f"header of {length} bytes but the file has {size}"
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            return "unreadable header"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    return None if expected == size else f"{size} bytes where its header describes {expected} (truncated?)"


def check_weights_file(source: Any, subfolder: str | None = None) -> None:
    """Refuses a local adapter folder whose weights file is missing, truncated or corrupt; Hub ids are left to PEFT.

    Raises:
        AdapterLoadError: naming the file and what is wrong with it.
    """
    folder = Path(str(source)) / (subfolder or "")
    if not folder.is_dir():
        return
    for name in WEIGHTS_NAMES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            problem = _safetensors_problem(path)
        else:
            import torch

            try:
                torch.load(path, map_location="cpu", weights_only=True)
                problem = None
            except Exception as err:  # truncated zip or pickle
                problem = f"cannot be read ({type(err).__name__})"
        if problem:
            raise AdapterLoadError(f"{path}: truncated or corrupt adapter weights ({problem}); nothing was loaded")
        return
    raise AdapterLoadError(f"{folder}: no adapter weights ({' or '.join(WEIGHTS_NAMES)}); nothing was loaded")


def discard_failed_adapter(tuner: Any, adapter_name: str) -> None:
    """Removes a half-loaded adapter; with no adapter left, also restores the base parameters' ``requires_grad``."""
    tuner.remove_adapter_completely(adapter_name)
    getattr(tuner, "_fresh_adapters", set()).discard(adapter_name)
    if not tuner.peft_config:
        flags = getattr(tuner, "_base_requires_grad", {})
        for name, param in tuner.model.named_parameters():
            if name in flags:
                param.requires_grad_(flags[name])


def _as_load_keys(model: nn.Module, adapter_name: str, keys: set[str]) -> set[str]:
    """Saved keys of ``modules_to_save`` -> the keys PEFT hands to the tuner (with ``modules_to_save.<name>``)."""
    from peft.utils.other import AuxiliaryTrainingWrapper

    for name, module in model.named_modules():
        if isinstance(module, AuxiliaryTrainingWrapper):
            for saved, loaded in module.adapter_state_dict_load_map(adapter_name).items():
                if f"{name}.{saved}" in keys:
                    keys = (keys - {f"{name}.{saved}"}) | {f"{name}.{loaded}"}
    return keys


def check_adapter_load(model: nn.Module, adapter_name: str, state_dict: dict[str, Any]) -> None:
    """Called before an adapter's weights are copied in: refuses a reload and a checkpoint that does not match.

    Args:
        model: The ``PeftModel`` (or the model with injected adapters) being loaded into.
        adapter_name: The adapter receiving the weights.
        state_dict: The checkpoint's tensors, keyed as saved (no adapter name in the keys).

    Raises:
        AdapterLoadError: the adapter already held weights (it is kept as it was), or the checkpoint misses or
            renames tensors of the adapter (the new adapter is removed again).
    """
    tuner = model.base_model if hasattr(model, "base_model") else model
    fresh = getattr(tuner, "_fresh_adapters", None)
    if fresh is None:
        return
    if adapter_name not in fresh:
        raise AdapterLoadError(
            f"adapter '{adapter_name}' is already loaded; loading weights into it would replace them silently: "
            f"call delete_adapter('{adapter_name}') first or load under another adapter_name"
        )
    from peft.utils import get_peft_model_state_dict

    expected = _as_load_keys(model, adapter_name, set(get_peft_model_state_dict(model, adapter_name=adapter_name)))
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        discard_failed_adapter(tuner, adapter_name)
        parts = [f"{len(missing)} missing tensor(s) such as {missing[:2]}"] if missing else []
        parts += [f"{len(unexpected)} unknown tensor(s) such as {unexpected[:2]}"] if unexpected else []
        raise AdapterLoadError(
            f"adapter '{adapter_name}': the checkpoint does not match the adapter it configures ({'; '.join(parts)}); "
            "the model was left as before"
        )
    fresh.discard(adapter_name)
