"""peft-medsa: Med-SA (Medical SAM Adapter) as PEFT tuners on transformers' SamModel.

Importing this package registers the PEFT method ``MEDSA`` so that ``get_peft_model(sam, MedSAConfig(...))``
and ``PeftModel.from_pretrained(sam, path)`` work as they do for LoRA.
"""

from __future__ import annotations

from .tuners.medsa import MedSAConfig, MedSAModel

__version__ = "0.1.0"

__all__ = ["MedSAConfig", "MedSAModel", "__version__"]
