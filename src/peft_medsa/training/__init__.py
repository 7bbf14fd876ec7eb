"""Training Med-SA adapters with accelerate: the loop, Dice + BCE losses and atomic, resumable checkpoints."""

from __future__ import annotations

from .checkpoints import CheckpointMismatchError, latest_checkpoint
from .config import TrainingConfig
from .inputs import model_input_size, prepare_sample
from .loop import MedSATrainer, NonFiniteLossError, TrainingResult, train
from .losses import dice_bce_loss, soft_dice_loss
from .targets import TargetSamples

__all__ = [
    "CheckpointMismatchError",
    "MedSATrainer",
    "NonFiniteLossError",
    "TargetSamples",
    "TrainingConfig",
    "TrainingResult",
    "dice_bce_loss",
    "latest_checkpoint",
    "model_input_size",
    "prepare_sample",
    "soft_dice_loss",
    "train",
]
