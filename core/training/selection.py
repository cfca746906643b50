"""Which epoch of a fit is the best one, by ``evaluation.select`` on the validation split, and
the weights it had."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mtlkit.components.interfaces import MetricFn
from mtlkit.evaluation.metrics import selection_score

Weights = dict[str, dict[str, torch.Tensor]]
"""State dicts by module name (``model``, ``weighting``, ``constraints``)."""


class BestEpoch:
    """The best epoch of a fit so far: its number, its score and a copy of its weights.

    Scores are signed so that higher is better: negated for a metric that sets
    ``higher_is_better = False``. Until a finite score is seen (no validation split, or the
    metric undefined on it) the latest epoch counts as best.
    """

    def __init__(self, select: str, metrics: Mapping[str, MetricFn]):
        self.select = select
        metric = select.split(".")[1]
        # Dice and IoU (segmentation tasks) are no metric functions: higher is better.
        self.higher_is_better = getattr(metrics.get(metric), "higher_is_better", True)
        self.epoch = 0
        self.score = math.nan
        self.weights: Weights = {}

    def score_of(self, val_metrics: Mapping[str, Mapping[str, float]]) -> float:
        """The signed selection score of one epoch's validation metrics; NaN without any."""
        if not val_metrics:
            return math.nan
        return self.signed(selection_score(val_metrics, self.select))

    def signed(self, score: float) -> float:
        """``score`` turned between the metric's own direction and higher-is-better (both ways)."""
        return score if self.higher_is_better else -score

    def offer(self, epoch: int, score: float, modules: Mapping[str, nn.Module]) -> bool:
        """Keep ``epoch`` and a copy of the weights of ``modules`` if ``score`` (signed) makes it
        the best so far; returns whether it did."""
        if math.isnan(self.score) or (not math.isnan(score) and score > self.score):
            self.epoch, self.score = epoch, score
            self.weights = copy.deepcopy({name: m.state_dict() for name, m in modules.items()})
            return True
        return False

    def restore(self, modules: Mapping[str, nn.Module]) -> None:
        """Load the kept weights into ``modules`` (the same names as offered)."""
        for name, module in modules.items():
            module.load_state_dict(self.weights[name])

    def state_dict(self) -> dict[str, Any]:
        """Epoch, signed score and weights, for the saved training state."""
        return {"epoch": self.epoch, "score": self.score, **self.weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (a score of None reads as NaN)."""
        self.epoch = int(state["epoch"])
        self.score = math.nan if state["score"] is None else float(state["score"])
        self.weights = {k: dict(v) for k, v in state.items() if k not in ("epoch", "score")}
