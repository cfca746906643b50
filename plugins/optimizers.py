"""Optimizers and learning-rate schedulers: torch's own, under the names the config uses.

``training.optimizer: {name: adam, lr: 0.0001}`` and ``training.scheduler: {name: step,
step_size: 50, gamma: 0.1}`` (the paper's settings, and the defaults).
"""

from __future__ import annotations

import torch
from pydantic import Field

from mtlkit import OptionsModel, hookimpl


class AdamOptions(OptionsModel):
    lr: float = Field(1e-4, gt=0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")


class SgdOptions(AdamOptions):
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum")


def adam(options: AdamOptions, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam (the paper's optimizer); weight_decay is an L2 penalty in the gradient."""
    return torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)


def adamw(options: AdamOptions, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW: Adam with weight decay applied to the weights directly (decoupled)."""
    return torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)


def sgd(options: SgdOptions, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Stochastic gradient descent with momentum."""
    return torch.optim.SGD(
        params, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay
    )


class StepOptions(OptionsModel):
    step_size: int = Field(50, ge=1, description="epochs between decays")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor")


class NoOptions(OptionsModel):
    """A schedule without options (any key is an error)."""


def step(options: StepOptions, optimizer: torch.optim.Optimizer, epochs: int):
    """The learning rate times gamma every step_size epochs (the paper: /10 every 50)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, options.step_size, options.gamma)


def cosine(options: NoOptions, optimizer: torch.optim.Optimizer, epochs: int):
    """Cosine annealing from the initial learning rate towards 0 over the run's epochs."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)


def constant(options: NoOptions, optimizer: torch.optim.Optimizer, epochs: int):
    """The initial learning rate throughout."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _unchanged)


def _unchanged(epoch: int) -> float:
    # A module-level function rather than a lambda: LambdaLR's state_dict leaves plain
    # functions out, so the saved state stays JSON.
    return 1.0


@hookimpl
def mtl_register_optimizers(registry):
    registry.register("adam", adam, options=AdamOptions)
    registry.register("adamw", adamw, options=AdamOptions)
    registry.register("sgd", sgd, options=SgdOptions)


@hookimpl
def mtl_register_schedulers(registry):
    registry.register("step", step, options=StepOptions)
    registry.register("cosine", cosine, options=NoOptions)
    registry.register("none", constant, options=NoOptions)
