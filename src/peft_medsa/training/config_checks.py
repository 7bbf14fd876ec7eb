"""Checks of a `TrainingConfig` that the dataclass types do not enforce, run when the config is built.

Everything that could otherwise fail after hours of training (an unknown validation prompt setting, a flag given as
the string ``"no"``, a NaN learning rate or clipping norm) is refused before the first step, with the field named.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BOOL_FIELDS = ("cpu", "resume", "overwrite", "show_progress", "cache_frozen_encoder")
NON_NEGATIVE_FLOATS = ("weight_decay", "max_grad_norm")

__all__ = ["check_training_config"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_training_config(config: Any) -> None:
    """Refuses non-boolean flags, non-finite or negative floats, an empty ``output_dir`` and an unknown
    ``eval_setting``.

    Raises:
        ValueError: naming the field, the value given and what was expected.
    """
    name = type(config).__name__
    for field in BOOL_FIELDS:
        value = getattr(config, field)
        if not isinstance(value, bool):
            raise ValueError(f"{name}.{field} must be True or False, got {value!r}")
    for field in ("learning_rate", "box_probability", "box_iou", *NON_NEGATIVE_FLOATS):
        value = getattr(config, field)
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError(f"{name}.{field} must be a finite number, got {value!r}")
    for field in NON_NEGATIVE_FLOATS:
        if getattr(config, field) < 0:
            raise ValueError(f"{name}.{field} must be >= 0, got {getattr(config, field)!r}")
    if not str(config.output_dir).strip():
        raise ValueError(f"{name}.output_dir is empty; expected the run folder")
    from ..prompts import make_prompt

    try:
        make_prompt(np.ones((4, 4), dtype=bool), config.eval_setting, 0)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{name}.eval_setting={config.eval_setting!r} is not a validation prompt setting ({err}); checked before "
            "training so that the final validation cannot fail after the last step"
        ) from None
