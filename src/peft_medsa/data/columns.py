"""Reading one column of a training set without decoding the others.

A training set is a ``datasets.Dataset`` (rows are dicts, images decoded on access) or any sequence of sample dicts.
Scanning it for its masks (which rows have a target, what shape the annotations have) should not decode every image:
:func:`mask_rows` keeps only the ``mask`` column of a ``datasets.Dataset`` and leaves other sequences as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def mask_rows(data: Sequence[dict[str, Any]] | Any) -> Sequence[dict[str, Any]]:
    """``data`` reduced to what a scan of its masks reads: ``rows[i]["mask"]`` is sample ``i``'s label map.

    Args:
        data: A ``datasets.Dataset`` (anything with ``select_columns``) or a sequence of sample dicts.

    Returns:
        ``data.select_columns(["mask"])`` for a ``datasets.Dataset`` (its rows hold only ``mask``, so no image is
        decoded), else ``data`` itself. Same length and order as ``data``.
    """
    return data.select_columns(["mask"]) if hasattr(data, "select_columns") else data


__all__ = ["mask_rows"]
