"""Per-task losses masked by label availability."""

from __future__ import annotations

import torch

from mtlkit.components.interfaces import TaskLossFn


def masked_task_loss(fn: TaskLossFn, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean loss over the samples whose target is known; exactly 0 (with a gradient path,
    never NaN) when none is.

    Unknown targets are NaN. They are replaced by 0 before the loss is computed and then
    multiplied out, which avoids boolean indexing (a device sync on GPU).
    """
    known = ~torch.isnan(targets)
    filled = torch.where(known, targets, torch.zeros_like(targets))
    per_sample = fn(logits, filled)
    weights = known.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp(min=1.0)
