"""An exponential moving average (EMA) of a model's weights, for ``training.ema``.

The averaged copy is what a run evaluates, selects its best epoch by and saves: on small
data sets the raw weights jump from step to step and the best-epoch choice on a small
validation split picks up that noise; their running average moves smoothly.
"""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    """``average = d * average + (1 - d) * weights`` after every optimiser step.

    ``d`` grows from 0.1 towards ``decay`` as ``(1 + t) / (10 + t)`` over the first updates, so
    the random initial weights do not linger in the average of a short run. Floating-point
    parameters and buffers (batch-norm running statistics) are averaged; integer buffers
    (batch counts) are copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be between 0 and 1, got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        # The optimiser updates the live tensors in place, so the pairs stay valid.
        self._floats: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self._others: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        live = model.state_dict(keep_vars=False)
        for name, average in self.model.state_dict(keep_vars=False).items():
            group = self._floats if average.dtype.is_floating_point else self._others
            group[0].append(average)
            group[1].append(live[name])

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the live model's current weights into the average."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        averages, live = self._floats
        if averages:
            torch._foreach_lerp_(averages, live, weight)
        for average, value in zip(*self._others, strict=True):
            average.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, and the update count (saved for resume)."""
        return {
            **{f"model.{k}": v for k, v in self.model.state_dict().items()},
            "updates": torch.tensor(self.updates, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        self.model.load_state_dict(weights)  # copies in place: the pairs stay valid
        self.updates = int(state["updates"])
