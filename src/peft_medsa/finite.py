"""One check used wherever numbers enter from a user: NaN and infinity are refused with the name of the input.

A NaN click or box corner silently becomes a prompt at an arbitrary place (or none) once it reaches the model; a NaN
scale factor spreads to every coordinate. Refusing them at the boundary keeps results honest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["require_finite"]


def require_finite(values: Any, what: str) -> np.ndarray:
    """Returns ``values`` as a float64 array after refusing NaN and infinite entries.

    Raises:
        ValueError: naming ``what`` and the offending values.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {values!r}") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{what} must be finite numbers, got {array.tolist()}")
    return array
