"""The training loss: per-task losses masked by label availability, the constraint losses,
and the task weighting that combines them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from mtlkit.components.interfaces import Constraint, TaskHead, TaskLossFn, TaskWeighting
from mtlkit.errors import ConfigError, PluginError


def masked_task_loss(fn: TaskLossFn, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean loss over the samples whose target is known; exactly 0 (with a gradient path,
    never NaN) when none is.

    Unknown targets are NaN. They are replaced by 0 before the loss is computed and then
    multiplied out, which avoids boolean indexing (a device sync on GPU).
    """
    known = ~torch.isnan(targets)
    return masked_mean(fn(logits, torch.where(known, targets, torch.zeros_like(targets))), targets)


def masked_mean(per_sample: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean of ``per_sample`` (N,) over the samples whose target (N,) is known (not
    NaN); exactly 0, with a gradient path, when none is. ``per_sample`` must be finite for
    the unknown ones too: compute it with their targets filled in (e.g. with 0)."""
    weights = (~torch.isnan(targets)).to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp(min=1.0)


class Objective:
    """A batch's training loss: the weighted task losses plus every constraint's loss.

    ``targets`` columns follow ``heads``; the weighting and constraints are the instances
    being trained, so a learned weighting or constraint gets its gradient through this loss.
    A task that a constraint governs (:meth:`Constraint.task_losses`) takes that
    constraint's loss instead of its configured one. ``dense_heads`` (segmentation) train
    on the batch's masks; an image without a mask adds nothing to their loss.
    """

    def __init__(
        self,
        heads: list[TaskHead],
        loss_fns: Mapping[str, TaskLossFn],
        weighting: TaskWeighting,
        constraints: Iterable[Constraint],
        dense_heads: Sequence[TaskHead] = (),
    ):
        self.heads = heads
        self.dense_heads = list(dense_heads)
        self.loss_fns = loss_fns
        self.weighting = weighting
        self.constraints = list(constraints)
        self._governing = [
            (index, c)
            for index, c in enumerate(self.constraints)
            if type(c).task_losses is not Constraint.task_losses
        ]
        self._with_loss = [c for c in self.constraints if type(c).forward is not Constraint.forward]

    @property
    def task_names(self) -> list[str]:
        """The tasks of the losses :meth:`__call__` returns, in that order."""
        return [head.name for head in [*self.heads, *self.dense_heads]]

    def __call__(
        self,
        outputs: Mapping[str, torch.Tensor],
        targets: torch.Tensor,
        masks: torch.Tensor | None = None,
        mask_known: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """``(loss per task, constraint loss, total loss)`` for one batch's model outputs;
        the task losses in the order of :attr:`task_names`. ``masks`` (N, 1, H, W) 0/1 and
        ``mask_known`` (N,) 1/NaN: the dense tasks' targets."""
        governed = self.governed_losses(outputs, targets)
        losses = {
            head.name: governed[head.name]
            if head.name in governed
            else masked_task_loss(self.loss_fns[head.name], outputs[head.name], targets[:, column])
            for column, head in enumerate(self.heads)
        }
        if self.dense_heads:
            if masks is None or mask_known is None:
                raise ValueError("a segmentation task trains on masks: pass masks and mask_known")
            truth = masks.to(torch.float32)
            for head in self.dense_heads:
                per_image = self.loss_fns[head.name](outputs[head.name].float(), truth)
                losses[head.name] = masked_mean(per_image, mask_known)
        constraint_loss = self.constraint_loss(outputs)
        return losses, constraint_loss, self.weighting(losses) + constraint_loss

    def governed_losses(
        self, outputs: Mapping[str, torch.Tensor], targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The task losses the constraints give for the tasks they govern (empty without).

        Raises :class:`ConfigError` when two constraints govern one task and
        :class:`PluginError` when a constraint names a task the run does not have.
        """
        if not self._governing:
            return {}
        logits = {h.name: outputs[h.name].float() for h in self.heads}
        by_task = {h.name: targets[:, column] for column, h in enumerate(self.heads)}
        out: dict[str, torch.Tensor] = {}
        owner: dict[str, int] = {}
        for index, constraint in self._governing:
            for task, loss in constraint.task_losses(logits, by_task).items():
                if task not in by_task:
                    raise PluginError(
                        f"constraints[{index}] ({type(constraint).__name__}) gave a task loss "
                        f"for {task!r}, which no head defines; tasks: {', '.join(by_task)}"
                    )
                if task in owner:
                    raise ConfigError(
                        [
                            (
                                f"constraints[{index}]",
                                f"governs the loss of task {task!r}, which "
                                f"constraints[{owner[task]}] governs already: a task's loss "
                                "comes from one constraint at most",
                            )
                        ]
                    )
                out[task], owner[task] = loss, index
        return out

    def constraint_loss(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The sum of the constraint losses over every task's probabilities (0 without any)."""
        if not self._with_loss:
            return torch.zeros((), device=next(iter(outputs.values())).device)
        probabilities = {h.name: h.probabilities(outputs[h.name].float()) for h in self.heads}
        return sum(c(probabilities) for c in self._with_loss)
