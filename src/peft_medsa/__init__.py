"""peft-medsa: Med-SA (Medical SAM Adapter) as PEFT tuners on transformers' SamModel.

Importing this package registers the PEFT methods ``MEDSA``, ``SDTRANS`` and ``HYPADPT`` (so that
``get_peft_model(sam, MedSAConfig(...))`` and ``PeftModel.from_pretrained(sam, path)`` work as they do for LoRA) and
the ``lite_medsam`` model type with transformers' Auto classes. The training, Hub and inference helpers are imported
on first use, so that ``import peft_medsa`` stays light (it needs neither ``datasets`` nor the NIfTI/DICOM readers).
"""

from __future__ import annotations

import importlib
from typing import Any

from . import backbones  # noqa: F401  (registers the LiteMedSAM model type with the Auto classes)
from .tuners.hyp import HyPAdptConfig, HyPAdptModel, HyperPromptAdapter
from .tuners.medsa import MedSAConfig, MedSAModel
from .tuners.sd_trans import SDTransConfig, SDTransModel

__version__ = "0.1.0"

_LAZY = {
    "MedSAPredictor": ".inference.predictor",
    "MedSATrainer": ".training",
    "TrainingConfig": ".training",
    "train": ".training",
    "load_organ_adapters": ".hub",
    "push_adapters_to_hub": ".hub",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HyPAdptConfig",
    "HyPAdptModel",
    "HyperPromptAdapter",
    "MedSAConfig",
    "MedSAModel",
    "MedSATrainer",
    "MedSAPredictor",
    "SDTransConfig",
    "SDTransModel",
    "TrainingConfig",
    "__version__",
    "load_organ_adapters",
    "push_adapters_to_hub",
    "train",
]
