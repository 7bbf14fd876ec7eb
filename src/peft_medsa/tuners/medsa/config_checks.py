"""Checks of Med-SA configs that the dataclass types do not enforce (shared by MedSAConfig and HyPAdptConfig).

Python takes any non-empty string as true, so ``decoder_adapters="no"`` would place the decoder adapters; a NaN
``scaling`` would make every output NaN. Both are refused with the field named.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

__all__ = ["check_bool_fields", "check_modules_to_save", "check_scaling"]


def check_bool_fields(config: Any, names: tuple[str, ...]) -> None:
    """Refuses fields that must be ``True`` / ``False`` and are not (``"no"``, ``0``, ``None``)."""
    for name in names:
        value = getattr(config, name, False)
        if not isinstance(value, bool):
            raise ValueError(f"{type(config).__name__}.{name} must be True or False, got {name}={value!r}")


def check_scaling(config: Any) -> None:
    """Refuses a ``scaling`` that is not a finite number."""
    value = config.scaling
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{type(config).__name__}.scaling must be a finite number >= 0, got scaling={value!r}")


def check_modules_to_save(model: nn.Module, config: Any) -> None:
    """Refuses ``modules_to_save`` entries that name no module of ``model`` (PEFT matches names and suffixes).

    Raises:
        ValueError: naming the unknown entries and a few module names that do exist.
    """
    wanted = getattr(config, "modules_to_save", None)
    if not wanted:
        return
    if isinstance(wanted, str):
        wanted = [wanted]
    names = [name for name, _ in model.named_modules() if name]
    unknown = [w for w in wanted if not any(n == w or n.endswith("." + w) for n in names)]
    if unknown:
        examples = [n for n in names if n.count(".") <= 1][:6]
        raise ValueError(
            f"{type(config).__name__}.modules_to_save={list(wanted)!r}: {unknown} name no module of "
            f"{type(model).__name__} (module names such as {examples})"
        )
