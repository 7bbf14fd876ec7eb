"""Losses on mask logits: soft Dice + binary cross-entropy, as used to train Med-SA (paper section 4.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - (2 |p t| + eps) / (|p| + |t| + eps)`` per image with ``p = sigmoid(logits)``, averaged over the batch.

    Args:
        logits: ``(B, H, W)`` or ``(B, 1, H, W)`` mask logits.
        target: Binary target of the same shape (any dtype; compared as float).
        eps: Smoothing term (keeps an empty target with an empty prediction at loss 0).

    Returns:
        A scalar tensor.
    """
    _check(logits, target)
    probs = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    intersection = (probs * target).sum(1)
    dice = (2 * intersection + eps) / (probs.sum(1) + target.sum(1) + eps)
    return (1 - dice).mean()


def dice_bce_loss(
    logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0, bce_weight: float = 1.0
) -> torch.Tensor:
    """``dice_weight * soft_dice_loss + bce_weight * binary_cross_entropy_with_logits`` (mean over pixels).

    Args:
        logits: ``(B, H, W)`` or ``(B, 1, H, W)`` mask logits.
        target: Binary target of the same shape.

    Returns:
        A scalar tensor (float32, also under autocast).
    """
    _check(logits, target)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return dice_weight * soft_dice_loss(logits, target) + bce_weight * bce


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape:
        raise ValueError(f"loss: logits have shape {tuple(logits.shape)} but target {tuple(target.shape)}")
    if logits.ndim < 2:
        raise ValueError(f"loss: expected a batch (B, H, W), got shape {tuple(logits.shape)}")


__all__ = ["dice_bce_loss", "soft_dice_loss"]
