"""Task weightings: how per-task losses are combined."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import torch
from pydantic import Field

from mtlkit import OptionsModel, TaskWeighting, hookimpl


class EqualOptions(OptionsModel):
    weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="optional fixed weight (>= 0) per task; others get 1"
    )


class EqualWeighting(TaskWeighting):
    """Sum of task losses with fixed weights (1 each by default, as in the paper)."""

    Options = EqualOptions

    def __init__(self, options: EqualOptions, task_names: list[str]):
        super().__init__(task_names)
        unknown = sorted(set(options.weights) - set(task_names))
        if unknown:
            raise ValueError(
                f"weights name unknown tasks {', '.join(unknown)}; tasks: {', '.join(task_names)}"
            )
        self.weights = {name: float(options.weights.get(name, 1.0)) for name in task_names}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[name] * loss for name, loss in losses.items())


@hookimpl
def mtl_register_task_weightings(registry):
    registry.register("equal", EqualWeighting)
