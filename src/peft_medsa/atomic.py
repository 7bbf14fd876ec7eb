"""Atomic file writes: a result file is either complete or absent, never half-written. Defined once here."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Calls ``write(temporary)`` on a temporary path beside ``path``, then renames it onto ``path``.

    The temporary name keeps ``path``'s full name as its suffix (``.tmp-<random>-labels.nii.gz``), so writers that
    pick the format from the extension (nibabel, PIL) still do. If ``write`` raises, the temporary file is removed
    and ``path`` is untouched. Parent folders are created.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


__all__ = ["atomic_write"]
