"""peft-medsa: Med-SA (Medical SAM Adapter) as PEFT tuners on transformers' SamModel.

Importing this package registers the PEFT methods ``MEDSA``, ``SDTRANS`` and ``HYPADPT`` (so that
``get_peft_model(sam, MedSAConfig(...))`` and ``PeftModel.from_pretrained(sam, path)`` work as they do for LoRA) and
the ``lite_medsam`` model type with transformers' Auto classes. It does so without loading torch, peft or
transformers itself: what is already imported is registered at once, the rest right after its import
(``peft_medsa._lazy``), and every public name is imported on first use. So ``peft-medsa`` commands that fail on their
arguments return at once, and ``import peft_medsa`` costs well under ``import peft``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._lazy import after_import

__version__ = "0.1.0"

_LAZY = {
    "HyPAdptConfig": ".tuners.hyp",
    "HyPAdptModel": ".tuners.hyp",
    "HyperPromptAdapter": ".tuners.hyp",
    "MedSAConfig": ".tuners.medsa",
    "MedSAModel": ".tuners.medsa",
    "SDTransConfig": ".tuners.sd_trans",
    "SDTransModel": ".tuners.sd_trans",
    "MedSAPredictor": ".inference.predictor",
    "MedSATrainer": ".training",
    "TrainingConfig": ".training",
    "train": ".training",
    "load_organ_adapters": ".hub",
    "push_adapters_to_hub": ".hub",
}
_SUBPACKAGES = ("backbones", "data", "evaluation", "hub", "inference", "metrics", "prompts", "training", "tuners")


def _register_peft_methods() -> None:
    for module in (".tuners.medsa", ".tuners.hyp", ".tuners.sd_trans"):  # each registers its type on import
        importlib.import_module(module, __name__)


def _register_model_type() -> None:
    importlib.import_module(".backbones", __name__)  # registers lite_medsam with transformers' Auto classes


after_import("transformers", _register_model_type)
after_import("peft", _register_peft_methods)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
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
