"""In-process checks of the distributed helpers: which FSDP settings the trainer honours or refuses, and the error
that names the differences between processes started with different configurations."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from peft_medsa.training.ranks import RankMismatchError, check_same_on_all_ranks, run_fingerprint
from peft_medsa.training.sharding import DEFAULT_UNITS, FSDPSettings, fsdp_settings


def fake_accelerator(kind=DistributedType.MULTI_CPU, processes=2, mixed="no"):
    return SimpleNamespace(distributed_type=kind, num_processes=processes, mixed_precision=mixed)


def test_fsdp_settings_from_the_accelerate_launch_environment(monkeypatch):
    for name in ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_TRANSFORMER_CLS_TO_WRAP", "FSDP_RESHARD_AFTER_FORWARD"):
        monkeypatch.delenv(name, raising=False)
    assert fsdp_settings(fake_accelerator()) is None  # plain DDP
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate falls back to MULTI_CPU; the trainer shards
    assert fsdp_settings(fake_accelerator()) == FSDPSettings(DEFAULT_UNITS, True)
    assert fsdp_settings(fake_accelerator(processes=1)) is None  # nothing to shard
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "SamVisionLayer, TinyViTBlock")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    assert fsdp_settings(fake_accelerator(kind=DistributedType.FSDP)) == FSDPSettings(
        ("SamVisionLayer", "TinyViTBlock"), False)
    with pytest.raises(ValueError, match="use 'bf16' or 'no'"):
        fsdp_settings(fake_accelerator(mixed="fp16"))
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="FSDP version 1 requested .* set `fsdp_version: 2`"):
        fsdp_settings(fake_accelerator())


def test_rank_mismatch_names_each_difference(monkeypatch):
    import torch.distributed as dist

    shapes = {"a.down.weight": [4, 32]}
    mine = run_fingerprint({"seed": 3, "lr": 1e-3}, {"default": {"r": 4}}, shapes, 12)
    other = run_fingerprint({"seed": 7, "lr": 1e-3}, {"default": {"r": 8}}, {"a.down.weight": [8, 32]}, 12)
    monkeypatch.setattr(dist, "all_gather_object", lambda parts, obj: parts.__setitem__(slice(None), [obj, other]))
    with pytest.raises(RankMismatchError) as error:
        check_same_on_all_ranks(mine, 2)
    message = str(error.value)
    assert "training_config.seed (rank 0: 3, rank 1: 7)" in message
    assert "peft_config[default].r (rank 0: 4, rank 1: 8)" in message
    assert "trainable tensors (rank 0: '1 tensors, 128 values" in message and "lr" not in message
    monkeypatch.setattr(dist, "all_gather_object", lambda parts, obj: parts.__setitem__(slice(None), [obj, obj]))
    check_same_on_all_ranks(mine, 2)  # equal configurations pass
