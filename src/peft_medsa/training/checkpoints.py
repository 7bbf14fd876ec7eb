"""Atomic, resumable training checkpoints around ``accelerator.save_state``.

Layout under ``<output_dir>/checkpoints/``::

    step-00000010/            accelerate state: adapter weights (trainable tensors only), optimizer, scheduler,
                              python / numpy / torch RNG states per process, + trainer_state.json
    step-00000020/
    latest                    text file naming the newest complete checkpoint folder

A checkpoint is written into ``.tmp-step-XXXXXXXX/``, renamed into place with ``os.replace`` once complete, and only
then is ``latest`` replaced (itself through a temporary file + ``os.replace``). A process killed at any moment leaves
``latest`` naming a complete checkpoint (or absent); stale temporary folders are removed by the next save.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checkpoint_integrity import write_manifest

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
STATE_FILE = "trainer_state.json"
_TMP_PREFIX = ".tmp-"
_IGNORED_PEFT_KEYS = ("base_model_name_or_path", "revision", "inference_mode", "peft_version", "mask_shape")
"""Left out of the stored config: bookkeeping, and ``mask_shape`` (a post-processing of the predictions that the
trainer decides from the data, which changes no number of the training)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a run with another configuration."""


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint after optimizer step ``step``."""
    return f"step-{step:08d}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_pointer(folder: Path, name: str) -> None:
    tmp = folder / f"{_TMP_PREFIX}{LATEST_FILE}"
    with tmp.open("w") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / LATEST_FILE)
    _fsync_dir(folder)


def save_checkpoint(
    accelerator,
    output_dir: str | Path,
    step: int,
    trainer_state: dict[str, Any],
    keep: int,
    write_parts: Callable[[Path], None] | None = None,
) -> Path:
    """Saves the accelerate state after optimizer step ``step`` atomically; all processes must call it.

    Args:
        accelerator: The run's ``Accelerator`` (its registered model, optimizer and scheduler are saved).
        output_dir: The run folder.
        step: Optimizer steps done.
        trainer_state: JSON-serialisable dict written as ``trainer_state.json`` (step, configs, ...).
        keep: Number of newest step checkpoints kept; older ones are deleted after ``latest`` moved.
        write_parts: ``write_parts(tmp_folder)``, called on every process after ``save_state`` and before the folder
            is completed: writes what accelerate does not hold (the gathered state of an FSDP2 model); it may run
            collectives, and must write files from the main process only.

    Returns:
        The final checkpoint folder.
    """
    folder = Path(output_dir) / CHECKPOINTS_DIR
    name = checkpoint_name(step)
    tmp, final = folder / f"{_TMP_PREFIX}{name}", folder / name
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{_TMP_PREFIX}step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if write_parts is not None:
        write_parts(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / STATE_FILE, {**trainer_state, "step": step})
        write_manifest(tmp)
        if final.exists():  # left by a run killed after the rename but before `latest` moved: never pointed to
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(folder)
        _replace_pointer(folder, name)
        _prune(folder, keep, protect=name)
    accelerator.wait_for_everyone()
    return final


def _prune(folder: Path, keep: int, protect: str) -> None:
    steps = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep)]:
        if old.name != protect:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The folder named by ``checkpoints/latest``, or ``None`` when no checkpoint was completed.

    Raises:
        FileNotFoundError: If ``latest`` names a folder that is missing or lacks ``trainer_state.json``.
    """
    folder = Path(output_dir) / CHECKPOINTS_DIR
    pointer = folder / LATEST_FILE
    if not pointer.is_file():
        return None
    target = folder / pointer.read_text().strip()
    if not (target / STATE_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {target}, which is missing or incomplete (no {STATE_FILE})")
    return target


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint folder."""
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def _normalise(config: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(config, sort_keys=True, default=str))
    return {k: v for k, v in data.items() if k not in _IGNORED_PEFT_KEYS}


def peft_config_dict(peft_config) -> dict[str, Any]:
    """A PEFT config as the JSON dict stored in checkpoints (bookkeeping keys left out)."""
    return _normalise(peft_config.to_dict())


def check_compatible(
    checkpoint: Path, stored: dict[str, Any], peft_config: dict[str, Any], training_diffs: dict, world_size: int
) -> None:
    """Refuses to resume from a checkpoint of another run configuration.

    Args:
        checkpoint: The checkpoint folder (named in the error).
        stored: Its ``trainer_state.json``.
        peft_config: ``{adapter name: peft_config_dict(config)}`` of the current model.
        training_diffs: ``TrainingConfig.differences(stored["training_config"])``.
        world_size: Current number of processes.

    Raises:
        CheckpointMismatchError: Naming every differing field with the stored and the current value.
    """
    problems = [f"training_config.{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in training_diffs.items()]
    old_adapters = {name: _normalise(c) for name, c in stored.get("peft_config", {}).items()}
    for name in sorted(set(old_adapters) | set(peft_config)):
        if name not in old_adapters or name not in peft_config:
            where = "checkpoint" if name in old_adapters else "model"
            problems.append(f"adapter {name!r} exists only in the {where}")
            continue
        old, new = old_adapters[name], _normalise(peft_config[name])
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                problems.append(f"peft_config[{name}].{key}: checkpoint {old.get(key)!r} vs now {new.get(key)!r}")
    if stored.get("world_size", world_size) != world_size:
        problems.append(f"world_size: checkpoint {stored.get('world_size')} vs now {world_size}")
    if problems:
        raise CheckpointMismatchError(
            f"cannot resume from {checkpoint}: it was written by another configuration: " + "; ".join(problems)
        )


__all__ = [
    "CHECKPOINTS_DIR",
    "LATEST_FILE",
    "STATE_FILE",
    "CheckpointMismatchError",
    "check_compatible",
    "checkpoint_name",
    "latest_checkpoint",
    "peft_config_dict",
    "read_trainer_state",
    "save_checkpoint",
]
