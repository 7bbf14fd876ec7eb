"""Honest resume: a checkpoint is used only when every one of its files is complete.

``save_checkpoint`` writes ``manifest.json`` (size and SHA-256 of every file) into each checkpoint. On resume,
:func:`resume_checkpoint` checks the checkpoint named by ``latest`` against its manifest (and, for checkpoints
written before manifests existed, by reading every file); a truncated or missing file makes it fall back to the
newest earlier complete checkpoint with a warning, or refuse with the checkpoint's path. ``resume=True`` without any
checkpoint is refused too, instead of silently starting again at step 0.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

MANIFEST_FILE = "manifest.json"

__all__ = ["MANIFEST_FILE", "IncompleteCheckpointError", "checkpoint_problem", "resume_checkpoint", "write_manifest"]


class IncompleteCheckpointError(FileNotFoundError):
    """No checkpoint to resume from, or only incomplete ones (a truncated or missing file); the message names it."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)


def write_manifest(folder: str | Path) -> Path:
    """Writes ``manifest.json``: ``{relative path: [size in bytes, sha256]}`` of every file of the checkpoint."""
    folder = Path(folder)
    entries = {p.relative_to(folder).as_posix(): [p.stat().st_size, _sha256(p)] for p in _files(folder)}
    path = folder / MANIFEST_FILE
    path.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return path


def _readable(path: Path) -> str | None:
    """Tries to read a file of a checkpoint without manifest; returns what went wrong, or ``None``."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            load_file(str(path))
        elif path.suffix in (".bin", ".pt", ".pth", ".pkl"):
            import torch

            torch.load(path, map_location="cpu", weights_only=False)  # the run's own RNG / optimizer state
    except Exception as err:  # truncated pickles, zips and headers raise many types
        return f"{path.name} cannot be read ({type(err).__name__})"
    return None


def checkpoint_problem(folder: str | Path) -> str | None:
    """What makes a checkpoint folder unusable (a missing, truncated or altered file); ``None`` if it is complete."""
    folder = Path(folder)
    if not (folder / "trainer_state.json").is_file():
        return "trainer_state.json is missing"
    manifest = folder / MANIFEST_FILE
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text())
        except ValueError:
            return f"{MANIFEST_FILE} cannot be read"
        for name, (size, digest) in sorted(entries.items()):
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, {size} were written (truncated?)"
            if _sha256(path) != digest:
                return f"{name} differs from what was written (checksum)"
        return None
    for path in _files(folder):
        problem = _readable(path)
        if problem:
            return problem
    return None


def _step(folder: Path) -> int:
    match = re.fullmatch(r"step-(\d+)", folder.name)
    return int(match.group(1)) if match else -1


def resume_checkpoint(output_dir: str | Path) -> Path:
    """The checkpoint to resume from: the newest complete one, the one ``latest`` names first.

    Raises:
        IncompleteCheckpointError: ``output_dir`` holds no checkpoint, or none of its checkpoints is complete (the
            message names the folder and what is wrong).
    """
    folder = Path(output_dir) / "checkpoints"
    pointer = folder / "latest"
    named = folder / pointer.read_text().strip() if pointer.is_file() else None
    candidates = sorted((p for p in folder.glob("step-*") if p.is_dir()), key=_step, reverse=True)
    if named is not None:
        candidates = [named] + [p for p in candidates if _step(p) < _step(named)]
    if not candidates:
        raise IncompleteCheckpointError(
            f"resume=True but {output_dir} holds no checkpoint (nothing in {folder}); start without resume, or set "
            "save_every so that checkpoints are written"
        )
    first_problem = None
    for checkpoint in candidates:
        problem = checkpoint_problem(checkpoint) if checkpoint.is_dir() else "the folder is missing"
        if problem is None:
            if first_problem is not None:
                warnings.warn(
                    f"checkpoint {candidates[0]} is incomplete ({first_problem}); resuming from the previous complete "
                    f"checkpoint {checkpoint}",
                    stacklevel=2,
                )
            return checkpoint
        first_problem = first_problem or problem
    raise IncompleteCheckpointError(
        f"cannot resume from {candidates[0]}: {first_problem}; no earlier complete checkpoint in {folder}"
    )
