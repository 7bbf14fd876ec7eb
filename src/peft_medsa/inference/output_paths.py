"""Output paths that can never destroy an input: checked before any model is loaded or any file is written.

An output path is refused when it resolves (symlinks followed, hard links compared by inode) to an input file, lies
inside an input folder (a DICOM series), equals another output of the same command, or is an existing folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["OutputPathError", "check_output_paths"]


class OutputPathError(ValueError):
    """An output path would overwrite an input or another output, or names a folder; the message names both."""


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def check_output_paths(inputs: Mapping[str, str | Path | None], outputs: Mapping[str, str | Path | None]) -> None:
    """Refuses outputs that would overwrite an input, another output, or that name a folder.

    Args:
        inputs: ``{flag: path}`` of the files or folders the command reads (``None`` values are skipped).
        outputs: ``{flag: path}`` of the files the command writes (``None`` values are skipped).

    Raises:
        OutputPathError: naming the flags and paths involved; nothing has been read or written yet.
    """
    ins = {flag: Path(p) for flag, p in inputs.items() if p is not None}
    outs = {flag: Path(p) for flag, p in outputs.items() if p is not None}
    for flag, out in outs.items():
        if out.is_dir():
            raise OutputPathError(f"{flag} {out}: is a folder; expected a file path to write")
        for in_flag, source in ins.items():
            if _same_file(out, source):
                raise OutputPathError(
                    f"{flag} {out} is the input {in_flag} {source}: it would be overwritten; choose another path"
                )
            if source.is_dir() and _inside(out, source):
                raise OutputPathError(
                    f"{flag} {out} lies inside the input folder {in_flag} {source}; write outside the input"
                )
    flags = list(outs)
    for i, first in enumerate(flags):
        for second in flags[i + 1 :]:
            if _same_file(outs[first], outs[second]):
                raise OutputPathError(
                    f"{first} and {second} are the same file {outs[first]}: one would overwrite the other; "
                    "give two different paths"
                )
