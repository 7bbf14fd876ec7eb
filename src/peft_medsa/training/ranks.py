"""Checks that every process of a distributed run was started with the same configuration, and clear errors when a
peer fails.

Without the check, ranks with different seeds silently train on overlapping batches, and ranks with different
adapters hang in, or fail obscurely inside, the first collective of DDP / FSDP.
"""

from __future__ import annotations

import json
import zlib
from typing import Any


class RankMismatchError(RuntimeError):
    """The processes of one run were started with different configurations (fields and values per rank named)."""


class PeerFailureError(RuntimeError):
    """A collective failed, most often because another process of the run died or was killed."""


def run_fingerprint(config: dict[str, Any], peft_configs: dict[str, Any], trainable_shapes: dict[str, list[int]],
                    num_samples: int) -> dict[str, Any]:
    """What must be equal on every rank: training options, adapters, trainable tensors and dataset size."""
    return {
        **{f"training_config.{k}": v for k, v in config.items()},
        **{f"peft_config[{name}].{k}": v for name, c in peft_configs.items() for k, v in c.items()},
        "adapters": sorted(peft_configs),
        "trainable tensors": f"{len(trainable_shapes)} tensors, {sum(_numel(s) for s in trainable_shapes.values())} "
                             f"values (crc32 {zlib.crc32(json.dumps(trainable_shapes, sort_keys=True).encode()):08x})",
        "number of training samples": num_samples,
    }


def _numel(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def check_same_on_all_ranks(fingerprint: dict[str, Any], world: int) -> None:
    """Exchanges ``fingerprint`` between the ranks (a collective) and raises on every rank if they differ.

    Raises:
        RankMismatchError: Naming each differing field with its value per rank.
    """
    if world <= 1:
        return
    import torch.distributed as dist

    canonical = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
    everyone: list[dict[str, Any] | None] = [None] * world
    dist.all_gather_object(everyone, canonical)
    keys = sorted(set().union(*(set(f) for f in everyone if f is not None)))
    problems = []
    for key in keys:
        values = [f.get(key) if f is not None else None for f in everyone]
        if any(v != values[0] for v in values[1:]):
            shown = ", ".join(f"rank {r}: {_short(v)}" for r, v in enumerate(values))
            problems.append(f"{key} ({shown})")
    if problems:
        raise RankMismatchError(
            f"the {world} processes of this run were started with different configurations; every process must run "
            "the same script with the same options. Differences: " + "; ".join(problems)
        )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["PeerFailureError", "RankMismatchError", "check_same_on_all_ranks", "run_fingerprint"]
