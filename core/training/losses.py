"""The training loss: per-task losses masked by label availability, the constraint losses,
and the task weighting that combines them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from mtlkit.components.interfaces import Constraint, TaskHead, TaskLossFn, TaskWeighting


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


class Objective:
    """A batch's training loss: the weighted task losses plus every constraint's loss.

    ``targets`` columns follow ``heads``; the weighting and constraints are the instances
    being trained, so a learned weighting or constraint gets its gradient through this loss.
    """

    def __init__(
        self,
        heads: list[TaskHead],
        loss_fns: Mapping[str, TaskLossFn],
        weighting: TaskWeighting,
        constraints: Iterable[Constraint],
    ):
        self.heads = heads
        self.loss_fns = loss_fns
        self.weighting = weighting
        self.constraints = list(constraints)

    def __call__(
        self, outputs: Mapping[str, torch.Tensor], targets: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """``(loss per task, constraint loss, total loss)`` for one batch's model outputs."""
        losses = {
            head.name: masked_task_loss(
                self.loss_fns[head.name], outputs[head.name], targets[:, column]
            )
            for column, head in enumerate(self.heads)
        }
        constraint_loss = self.constraint_loss(outputs)
        return losses, constraint_loss, self.weighting(losses) + constraint_loss

    def constraint_loss(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The sum of the constraint losses over every task's probabilities (0 without any)."""
        if not self.constraints:
            return torch.zeros((), device=next(iter(outputs.values())).device)
        probabilities = {h.name: h.probabilities(outputs[h.name].float()) for h in self.heads}
        return sum(c(probabilities) for c in self.constraints)
