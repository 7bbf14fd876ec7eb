"""peft-medsa: Med-SA (Medical SAM Adapter) as PEFT tuners on transformers' SamModel.

Importing this package registers the PEFT methods ``MEDSA``, ``SDTRANS`` and ``HYPADPT`` so that
``get_peft_model(sam, MedSAConfig(...))`` and ``PeftModel.from_pretrained(sam, path)`` work as they do for LoRA.
"""

from __future__ import annotations

from . import backbones  # noqa: F401  (registers the LiteMedSAM model type with the Auto classes)
from .hub import load_organ_adapters, push_adapters_to_hub
from .inference.predictor import MedSAPredictor
from .training import MedSATrainer, TrainingConfig, train
from .tuners.hyp import HyPAdptConfig, HyPAdptModel, HyperPromptAdapter
from .tuners.medsa import MedSAConfig, MedSAModel
from .tuners.sd_trans import SDTransConfig, SDTransModel

__version__ = "0.1.0"

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
