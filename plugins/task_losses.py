"""Per-sample task losses; the core masks unknown targets and averages."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from mtlkit import OptionsModel, hookimpl


class BCEOptions(OptionsModel):
    pos_weight: float | None = Field(None, gt=0, description="weight of positive samples")


def bce_loss(options: BCEOptions):
    """Binary cross-entropy on logits (the paper's loss)."""
    pos_weight = None if options.pos_weight is None else torch.tensor(options.pos_weight)

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = None if pos_weight is None else pos_weight.to(logits.device)
        return F.binary_cross_entropy_with_logits(
            logits.reshape(-1), targets, reduction="none", pos_weight=weight
        )

    return loss


bce_loss.head_kinds = ("binary",)


class CrossEntropyOptions(OptionsModel):
    label_smoothing: float = Field(0.0, ge=0, lt=1)


def cross_entropy_loss(options: CrossEntropyOptions):
    """Softmax cross-entropy for multiclass heads."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, targets.long(), reduction="none", label_smoothing=options.label_smoothing
        )

    return loss


cross_entropy_loss.head_kinds = ("multiclass",)


@hookimpl
def mtl_register_task_losses(registry):
    registry.register("bce", bce_loss, options=BCEOptions)
    registry.register("cross_entropy", cross_entropy_loss, options=CrossEntropyOptions)
