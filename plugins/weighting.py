"""Task weightings: how per-task losses are combined: fixed weights (equal), learned
uncertainty weights (Kendall et al. 2018) or dynamic weight average (Liu et al. 2019)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

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

    def task_weights(self) -> dict[str, float]:
        return dict(self.weights)


class UncertaintyOptions(OptionsModel):
    init_log_variance: float = Field(
        0.0, description="starting s = log(sigma^2) of every task (0: weight 1), e.g. 0.0"
    )


class UncertaintyWeighting(TaskWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla 2018, CVPR): one learned
    log variance per task, optimised with the model.

    With ``s_i = log(sigma_i^2)``,

        loss = sum_i exp(-s_i) * L_i + s_i

    the paper's eq. 7 in the log-variance form its experiments use (2x the regression
    likelihood). Its classification form (eq. 10) halves the ``s_i`` term; at the optimum
    ``exp(-s_i) = 1 / L_i`` here and ``1 / (2 L_i)`` there, the same weights relative to
    each other. A task whose loss is 0 in a batch (no labelled sample) still pulls its
    ``s_i`` down by the ``+ s_i`` term. The weights ``exp(-s_i)`` go to ``history.json``.
    """

    Options = UncertaintyOptions

    def __init__(self, options: UncertaintyOptions, task_names: list[str]):
        super().__init__(task_names)
        self.log_variance = nn.Parameter(
            torch.full((len(task_names),), float(options.init_log_variance))
        )

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack([losses[name] for name in self.task_names]).to(self.log_variance)
        return (torch.exp(-self.log_variance) * stacked + self.log_variance).sum()

    def task_weights(self) -> dict[str, float]:
        weights = torch.exp(-self.log_variance.detach()).tolist()
        return dict(zip(self.task_names, weights, strict=True))


class DWAOptions(OptionsModel):
    temperature: float = Field(
        2.0, gt=0, description="T: softness of the weights (large T: nearly equal), e.g. 2.0"
    )


class DynamicWeightAverage(TaskWeighting):
    """Dynamic weight average (Liu, Johns and Davison 2019, CVPR, MTAN): each epoch's weights
    follow how fast each task's loss fell over the two epochs before.

    The weights are::

        w_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T),  r_k(t-1) = L_k(t-1) / L_k(t-2)

    with ``L_k`` the mean training loss of task k over an epoch's steps, K tasks and
    ``w_k = 1`` in the first two epochs. A task whose mean loss was 0 two epochs before (no
    labelled sample in a whole epoch) takes ratio 1. The loss sums and the last two epochs'
    means are buffers, so the training state and a resumed fit keep them.
    """

    Options = DWAOptions

    def __init__(self, options: DWAOptions, task_names: list[str]):
        super().__init__(task_names)
        self.temperature = options.temperature
        count = len(task_names)
        self.register_buffer("weights", torch.ones(count))
        self.register_buffer("loss_sums", torch.zeros(count))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("previous", torch.zeros(2, count))  # L(t-1), L(t-2)
        self.register_buffer("epochs", torch.zeros((), dtype=torch.long))

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack([losses[name] for name in self.task_names]).float()
        if self.training:
            self.loss_sums += stacked.detach().to(self.loss_sums)
            self.steps += 1
        return (self.weights.to(stacked) * stacked).sum()

    def end_epoch(self) -> None:
        """Record the epoch's mean losses and set the next epoch's weights."""
        means = self.loss_sums / self.steps.clamp(min=1)
        self.previous.copy_(torch.stack([means, self.previous[0]]))
        self.epochs += 1
        self.loss_sums.zero_()
        self.steps.zero_()
        if int(self.epochs) >= 2:
            self.weights.copy_(dwa_weights(self.previous[0], self.previous[1], self.temperature))

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self.weights.tolist(), strict=True))


def dwa_weights(last: torch.Tensor, before: torch.Tensor, temperature: float) -> torch.Tensor:
    """DWA's weights from the mean task losses of the last two epochs (``last`` = L(t-1),
    ``before`` = L(t-2)): K softmax(r / T), r = last / before (1 where before is 0)."""
    ratio = torch.where(before > 0, last / before.clamp(min=torch.finfo(before.dtype).tiny), 1.0)
    return len(ratio) * torch.softmax(ratio / temperature, dim=0)


@hookimpl
def mtl_register_task_weightings(registry):
    registry.register("equal", EqualWeighting)
    registry.register("uncertainty", UncertaintyWeighting)
    registry.register("dwa", DynamicWeightAverage)
