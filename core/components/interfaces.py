"""The component contracts: what a task head, a task loss, a constraint, a task weighting,
a metric and a CLI command are, as the core sees them. Each is written once, here; the core
checks it (:mod:`mtlkit.components.contracts`) and :mod:`mtlkit.testing` lets a plugin
author check it in their own tests.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

HEAD_KINDS = ("binary", "multiclass")
"""``binary``: one sigmoid output, targets 0/1. ``multiclass``: one softmax output per class,
targets are class indices 0 .. len(classes) - 1."""

DEFAULT_LOSSES = {"binary": "bce", "multiclass": "cross_entropy"}
"""The task loss of a head that sets no ``default_loss``, by kind (both are built in)."""

TaskLossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(logits, targets) -> per-sample loss``; targets hold no NaN when it is called
(unknown ones are masked out by the core). Binary heads pass logits (N, 1) and float
targets (N,); multiclass heads pass logits (N, classes) and class indices as floats (N,)."""

MetricFn = Callable[[np.ndarray, np.ndarray, float], float]
"""``fn(y_true, y_prob, threshold) -> float`` over a whole split: ``y_true`` integer labels
(N,) (0/1, or class indices), ``y_prob`` probabilities (N,) for binary tasks and (N, classes)
for multiclass ones; only samples with a known label are passed. NaN where undefined."""


class TaskHead:
    """One prediction task: its output layer, its target and its probabilities.

    A subclass sets the class attributes and implements :meth:`target`; ``Options`` (an
    :class:`~mtlkit.OptionsModel`) validates its config keys, and it is built as
    ``Head(options)``, calling ``super().__init__(name, dropout=..., classes=...)``.

    Members the core uses:

    - ``kind``: ``"binary"`` or ``"multiclass"`` (:data:`HEAD_KINDS`);
    - ``classes``: class names, in output order; exactly two for a binary head;
    - ``default_loss``: the task loss used when the config gives none; None picks
      :data:`DEFAULT_LOSSES` of the kind;
    - ``name``: the task name, unique in a run (results and ``select: TASK.METRIC`` use it);
    - ``label_columns``: the data columns :meth:`target` reads, so a misspelt column is an
      error rather than a task without labels;
    - :meth:`target`, :meth:`build_module` and :meth:`probabilities`.

    ``Options`` needs no ``loss`` field: the core takes ``heads[i].loss`` out of every head's
    config. The core checks the class at registration and the built head (classes against
    kind, output shape) before training, and every target while preparing data.
    """

    kind: ClassVar[str] = "binary"
    default_loss: ClassVar[str | None] = None

    def __init__(self, name: str, *, dropout: float = 0.0, classes: list[str] | None = None):
        self.name = name
        self.dropout = dropout
        self.classes = list(classes) if classes is not None else ["negative", "positive"]

    @property
    def num_outputs(self) -> int:
        """Logits per sample: 1 for a binary head, one per class for a multiclass one."""
        return 1 if self.kind == "binary" else len(self.classes)

    @property
    def loss_name(self) -> str:
        """The task loss used when the config names none."""
        return self.default_loss or DEFAULT_LOSSES.get(self.kind, "")

    @property
    def label_columns(self) -> tuple[str, ...]:
        """Data columns this head reads; used to check that a data source provides them."""
        return ()

    def build_module(self, in_features: int) -> nn.Module:
        """The layer mapping pooled features (N, in_features) to logits (N, num_outputs)."""
        linear = nn.Linear(in_features, self.num_outputs)
        return nn.Sequential(nn.Dropout(self.dropout), linear) if self.dropout else linear

    def target(self, labels: Mapping[str, Any]) -> float:
        """This task's target for one sample's labels: 0.0/1.0 (binary) or a class index
        (multiclass) as a float; NaN if unknown.

        Raises ``ValueError`` with a short reason for a value it cannot interpret; the core
        lists it with the image it came from.
        """
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from logits: shape (N,) for binary, (N, classes) for multiclass."""
        if self.kind == "binary":
            return torch.sigmoid(logits.reshape(-1))
        return torch.softmax(logits, dim=-1)


class Constraint(nn.Module):
    """A loss over several tasks' probabilities that encodes how the tasks relate.

    Built as ``Constraint(options, heads)`` with ``heads`` the run's heads by task name;
    raises ``ValueError`` naming the problem when the options refer to tasks that do not
    exist or do not fit. :meth:`forward` receives every binary task's probabilities (N,)
    and multiclass task's (N, classes) for a batch, labelled or not.
    """

    def forward(self, probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One weighted, finite scalar loss (0-dim tensor) with a gradient path."""
        raise NotImplementedError

    def violations(
        self, probabilities: Mapping[str, torch.Tensor], threshold: float
    ) -> dict[str, float]:
        """Share of samples whose predictions at ``threshold`` break the constraint, per
        relation (``{"alnm_without_bm": 0.04}``), each in [0, 1]; reported beside the
        metrics."""
        return {}


class TaskWeighting(nn.Module):
    """Combines per-task losses into one; may own learnable parameters.

    Built as ``Weighting(options, task_names)`` (or ``Weighting(task_names)`` without
    options); :meth:`forward` receives ``{task: scalar loss}`` for every task.
    """

    def __init__(self, task_names: list[str]):
        super().__init__()
        self.task_names = task_names

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One scalar loss (0-dim tensor)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Command:
    """A CLI command; plugins register these through ``mtl_register_commands``.

    ``add_arguments(parser)`` declares its arguments; ``run(args, ctx)`` runs it with a
    :class:`mtlkit.CommandContext` and returns the exit code (None = 0).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    # Any, not CommandContext: the context holds the plugin host, which imports this module.
    run: Callable[[argparse.Namespace, Any], int | None]
