"""FSDP2 for the trainer: shard the PEFT model with ``fully_shard``; gather and load its trainable state on every rank.

Why the trainer shards the model itself: accelerate 1.15 does not run FSDP on CPU. With ``ACCELERATE_USE_FSDP=true``
(what ``accelerate launch`` exports for an FSDP config) or an explicit ``FullyShardedDataParallelPlugin`` and
``cpu=True``, ``Accelerator.distributed_type`` is ``MULTI_CPU`` and ``prepare`` wraps the model in DDP, silently.
So whenever FSDP is requested (accelerate's ``distributed_type`` FSDP, or ``ACCELERATE_USE_FSDP=true``) the trainer
applies torch's FSDP2 (``fully_shard``) itself, on CPU (gloo) and GPU alike, with the settings of the accelerate
config that ``accelerate launch`` exported (``FSDP_VERSION`` must be 2; ``FSDP_TRANSFORMER_CLS_TO_WRAP`` names the
layer classes sharded as their own units; ``FSDP_RESHARD_AFTER_FORWARD``). The model is then not passed to
``accelerator.prepare``: accelerate keeps the process group, autocast, gathers and RNG checkpointing.

Units: every module of a class in ``FSDP_TRANSFORMER_CLS_TO_WRAP`` (default ``SamVisionLayer``), the whole vision
encoder (so that ``get_image_embeddings``, used for the corrective clicks and the validation, gathers its own
parameters), then the root (the PEFT model: prompt encoder, mask decoder and their adapters).

Saving is a collective: :func:`full_trainable_state` and :func:`full_optimizer_state` must run on every rank, in
the same order; only the main process receives the tensors and writes files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_UNITS = ("SamVisionLayer", "TinyViTBlock")
MODEL_FILE = "sharded_trainable.safetensors"
OPTIMIZER_FILE = "sharded_optimizer.pt"


@dataclass(frozen=True)
class FSDPSettings:
    """The FSDP options the trainer honours.

    Args:
        unit_classes: Class names of the modules sharded as their own FSDP units.
        reshard_after_forward: Free the gathered parameters after each unit's forward (``FULL_SHARD``) or keep
            them until the backward (``SHARD_GRAD_OP``).
    """

    unit_classes: tuple[str, ...] = DEFAULT_UNITS
    reshard_after_forward: bool = True


def _env_true(name: str, default: str = "false") -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes")


def fsdp_settings(accelerator) -> FSDPSettings | None:
    """The FSDP settings requested for this run, or ``None`` for no FSDP (DDP, or a single process: nothing to shard).

    Raises:
        ValueError: FSDP version 1 was requested (the trainer shards with FSDP2 only) or mixed precision fp16
            (FSDP2 has no gradient scaler here; use bf16).
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP and not _env_true("ACCELERATE_USE_FSDP"):
        return None
    if accelerator.num_processes == 1:
        return None
    version = os.environ.get("FSDP_VERSION", "2").strip()
    if version != "2":
        raise ValueError(
            f"FSDP version {version} requested (fsdp_version in the accelerate config); the Med-SA trainer shards "
            "with FSDP2 (torch fully_shard) only: set `fsdp_version: 2`"
        )
    if accelerator.mixed_precision == "fp16":
        raise ValueError("mixed_precision='fp16' is not supported with FSDP; use 'bf16' or 'no'")
    names = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    units = tuple(n.strip() for n in names.split(",") if n.strip()) or DEFAULT_UNITS
    return FSDPSettings(units, _env_true("FSDP_RESHARD_AFTER_FORWARD", "true"))


def shard_model(model: torch.nn.Module, device: torch.device, settings: FSDPSettings) -> torch.nn.Module:
    """Moves ``model`` to ``device`` and applies ``fully_shard`` in place (units: see the module docstring).

    Must run before the optimizer is created (the parameters become ``DTensor`` shards).

    Raises:
        ValueError: No module of ``settings.unit_classes`` exists in the model.
    """
    from torch.distributed.fsdp import fully_shard

    model.to(device)
    units = [m for m in model.modules() if type(m).__name__ in settings.unit_classes]
    if not units:
        found = sorted({type(m).__name__ for m in model.modules() if "Layer" in type(m).__name__})
        raise ValueError(
            f"no module of the FSDP unit classes {list(settings.unit_classes)} in {type(model).__name__}; set "
            f"fsdp_transformer_layer_cls_to_wrap to one of {found}"
        )
    kwargs = {"reshard_after_forward": settings.reshard_after_forward}
    for unit in units:
        fully_shard(unit, **kwargs)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "vision_encoder", None) is not None:
        fully_shard(base.vision_encoder, **kwargs)
    fully_shard(model, **kwargs)
    # FSDP2 takes the first module run as its root; the corrective clicks run the vision encoder alone first, so
    # make the PEFT model the root now (torch has no public call for this).
    model._get_fsdp_state()._lazy_init()
    return model


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_trainable_state(model: torch.nn.Module, is_main: bool) -> dict[str, torch.Tensor]:
    """The full (unsharded) trainable tensors by parameter name, on the CPU of the main process; ``{}`` elsewhere.

    A collective: every rank must call it.
    """
    state = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            full = _full(param.detach())
            if is_main:
                state[name] = full.cpu().clone()
    return state


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state as full tensors keyed by parameter name (the main process's copy; a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded_parts(folder: Path, model, optimizer, is_main: bool) -> None:
    """Gathers (all ranks) and writes (main process) the trainable tensors and optimizer state into ``folder``."""
    from safetensors.torch import save_file

    state = full_trainable_state(model, is_main)
    optim = full_optimizer_state(model, optimizer)
    if is_main:
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / MODEL_FILE))
        torch.save(optim, folder / OPTIMIZER_FILE)


def load_sharded_parts(folder: Path, model, optimizer, trainable: Sequence[str]) -> None:
    """Loads what :func:`save_sharded_parts` wrote into the sharded model and optimizer (every rank reads the files).

    Raises:
        FileNotFoundError: The checkpoint has no sharded parts (written by a run without FSDP).
    """
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    if not (folder / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {MODEL_FILE}: it was not written by an FSDP run")
    state = load_file(str(folder / MODEL_FILE))
    if sorted(state) != sorted(trainable):
        raise ValueError(f"cannot resume from {folder}: its trainable tensors differ from this model's")
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, state, options=options)
    optim = torch.load(folder / OPTIMIZER_FILE, weights_only=False)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=optim, options=options)


__all__ = [
    "FSDPSettings",
    "fsdp_settings",
    "full_optimizer_state",
    "full_trainable_state",
    "load_sharded_parts",
    "save_sharded_parts",
    "shard_model",
]
