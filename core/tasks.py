"""What a task head, a constraint and a task weighting are, as the core sees them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn


class TaskHead:
    """One prediction task: its output layer, its target and its probabilities.

    Subclasses set ``kind`` and implement :meth:`target`; ``name`` must be unique in a run.
    A head is built from its validated options; the core later calls :meth:`build_module`
    with the backbone's feature width.
    """

    kind: ClassVar[str] = "binary"  # "binary" (one sigmoid) or "multiclass" (softmax)
    default_loss: ClassVar[str] = "bce"

    def __init__(self, name: str, *, dropout: float = 0.0, classes: list[str] | None = None):
        self.name = name
        self.dropout = dropout
        self.classes = classes or ["negative", "positive"]

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "binary" else len(self.classes)

    @property
    def label_columns(self) -> tuple[str, ...]:
        """Data columns this head reads; used to check that a data source provides them."""
        return ()

    def build_module(self, in_features: int) -> nn.Module:
        """The layer mapping pooled features to this task's logits."""
        linear = nn.Linear(in_features, self.num_outputs)
        return nn.Sequential(nn.Dropout(self.dropout), linear) if self.dropout else linear

    def target(self, labels: Mapping[str, Any]) -> float:
        """This task's target for one sample: 0/1 (binary) or a class index; NaN if unknown.

        Raises ``ValueError`` with a short reason for a value it cannot interpret.
        """
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from logits: shape (N,) for binary, (N, classes) for multiclass."""
        if self.kind == "binary":
            return torch.sigmoid(logits.reshape(-1))
        return torch.softmax(logits, dim=-1)


class Constraint(nn.Module):
    """A loss over several tasks' probabilities that encodes how the tasks relate.

    Built with its options and the run's heads (by task name); raises ``ValueError`` naming
    the problem when the options refer to tasks that do not exist or do not fit.
    """

    def forward(self, probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def violations(
        self, probabilities: Mapping[str, torch.Tensor], threshold: float
    ) -> dict[str, float]:
        """Share of samples whose predictions at ``threshold`` break the constraint, per
        relation; reported beside the metrics."""
        return {}


class TaskWeighting(nn.Module):
    """Combines per-task losses into one; may own learnable parameters."""

    def __init__(self, task_names: list[str]):
        super().__init__()
        self.task_names = task_names

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError
