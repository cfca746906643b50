"""Per-sample task losses; the core masks unknown targets and averages."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from mtlkit import OptionsModel, hookimpl


class BCEOptions(OptionsModel):
    pos_weight: float | None = Field(None, gt=0, description="weight of positive samples")
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="targets pulled towards 0.5 by this share: 1 -> 1 - s/2, 0 -> s/2",
    )


def bce_loss(options: BCEOptions):
    """Binary cross-entropy on logits (the paper's loss); with ``label_smoothing`` s the
    targets are 1 - s/2 and s/2, so the logits stop growing once they fit."""
    pos_weight = None if options.pos_weight is None else torch.tensor(options.pos_weight)
    smoothing = options.label_smoothing

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = None if pos_weight is None else pos_weight.to(logits.device)
        if smoothing:
            targets = targets * (1 - smoothing) + smoothing / 2
        return F.binary_cross_entropy_with_logits(
            logits.reshape(-1), targets, reduction="none", pos_weight=weight
        )

    return loss


bce_loss.head_kinds = ("binary",)


class CrossEntropyOptions(OptionsModel):
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="share of the target spread evenly over all classes"
    )


def cross_entropy_loss(options: CrossEntropyOptions):
    """Softmax cross-entropy for multiclass heads."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, targets.long(), reduction="none", label_smoothing=options.label_smoothing
        )

    return loss


cross_entropy_loss.head_kinds = ("multiclass",)


class DiceBCEOptions(OptionsModel):
    dice_weight: float = Field(1.0, ge=0, description="weight of the soft Dice loss")
    bce_weight: float = Field(1.0, ge=0, description="weight of the per-pixel BCE")
    smooth: float = Field(1.0, gt=0, description="added to both sides of the Dice ratio")


def dice_bce_loss(options: DiceBCEOptions):
    """Soft Dice + per-pixel binary cross-entropy, per image, for segmentation heads:
    Dice keeps a small lesion from drowning in background pixels, BCE gives every pixel a
    gradient from the start."""
    if options.dice_weight == 0 and options.bce_weight == 0:
        raise ValueError("dice_weight and bce_weight are both 0: the loss would be 0")

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        total = logits.new_zeros(logits.shape[0])
        if options.dice_weight:
            total = total + options.dice_weight * soft_dice_loss(logits, targets, options.smooth)
        if options.bce_weight:
            bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            total = total + options.bce_weight * bce.flatten(1).mean(dim=1)
        return total

    return loss


dice_bce_loss.head_kinds = ("segmentation",)


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float) -> torch.Tensor:
    """1 - soft Dice per image (N,), from logits and 0/1 masks of shape (N, 1, H, W)."""
    probabilities = torch.sigmoid(logits).flatten(1)
    truth = targets.flatten(1)
    overlap = (probabilities * truth).sum(dim=1)
    return 1 - (2 * overlap + smooth) / (probabilities.sum(dim=1) + truth.sum(dim=1) + smooth)


@hookimpl
def mtl_register_task_losses(registry):
    registry.register("bce", bce_loss, options=BCEOptions)
    registry.register("cross_entropy", cross_entropy_loss, options=CrossEntropyOptions)
    registry.register("dice_bce", dice_bce_loss, options=DiceBCEOptions)
