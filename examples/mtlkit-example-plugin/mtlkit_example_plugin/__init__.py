"""An example mtlkit plugin, installed as its own distribution.

    pip install -e examples/mtlkit-example-plugin
    mtl plugins        # lists `brier` (metric) and `revised_uncertainty` (weighting),
                       # owner `example`

Then use them in a config:

    weighting: revised_uncertainty
    evaluation: {metrics: [acc, se, sp, precision, f1, auc, brier]}
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from mtlkit import OptionsModel, TaskWeighting, hookimpl


def brier(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> float:
    """Brier score: mean squared error of the probabilities (lower is better)."""
    if len(y_true) == 0:
        return math.nan
    if y_prob.ndim == 1:
        return float(np.mean((y_prob - y_true) ** 2))
    onehot = np.eye(y_prob.shape[1])[y_true]
    return float(np.mean(np.sum((y_prob - onehot) ** 2, axis=1)))


brier.higher_is_better = False  # so `select: mean.brier` picks the lowest


class RevisedUncertaintyOptions(OptionsModel):
    init_log_variance: float = Field(0.0, description="starting log(c^2) of every task")


class RevisedUncertaintyWeighting(TaskWeighting):
    """Liebel and Koerner 2018, the revised form of Kendall et al.'s uncertainty weighting
    (built in as ``uncertainty``): learn one c per task; loss = sum(L / (2 c^2) +
    log(1 + c^2)), whose regulariser stays positive. Learned as s = log(c^2)."""

    Options = RevisedUncertaintyOptions

    def __init__(self, options: RevisedUncertaintyOptions, task_names: list[str]):
        super().__init__(task_names)
        self.log_variance = torch.nn.Parameter(
            torch.full((len(task_names),), options.init_log_variance)
        )

    def forward(self, losses):
        total = 0.0
        for i, name in enumerate(self.task_names):
            s = self.log_variance[i]
            total = total + 0.5 * torch.exp(-s) * losses[name] + torch.nn.functional.softplus(s)
        return total


@hookimpl
def mtl_register_metrics(registry):
    registry.register("brier", brier)


@hookimpl
def mtl_register_task_weightings(registry):
    registry.register("revised_uncertainty", RevisedUncertaintyWeighting)
