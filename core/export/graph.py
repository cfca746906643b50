"""The network as a deployer runs it: uint8 RoIs in, each task's probabilities out.

The normalisation, the constraints' output adjustment and (optionally) the mirror-image
test-time augmentation are inside the graph, computed by the engine's own
:func:`~mtlkit.inference.outputs.predicted_outputs`, so the exported model predicts what
``Engine.predict`` does on the same RoIs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from mtlkit.components.interfaces import Constraint, DenseHead, TaskHead
from mtlkit.data.transforms import normalize_batch
from mtlkit.errors import UsageError
from mtlkit.inference.outputs import predicted_outputs

if TYPE_CHECKING:
    from mtlkit.engine import Engine

INPUT_NAME = "image"
RAW_SUFFIX = "_raw"


@dataclass(frozen=True)
class Output:
    """One output of the graph: its name, the task it belongs to and what it holds
    (``probabilities``, ``raw_probabilities`` or ``mask_probabilities``)."""

    name: str
    task: str
    holds: str


class DeployedModel(nn.Module):
    """``forward(image)`` with ``image`` uint8 (N, 1, S, S), 0..255: a tuple with, in the
    order of :attr:`outputs`, each task's probabilities ((N,) binary, (N, classes)
    multiclass) as the engine predicts them, then the raw ones when a constraint adjusts
    outputs, then each segmentation task's per-pixel probabilities (N, S, S)."""

    def __init__(
        self,
        model: nn.Module,
        heads: Sequence[TaskHead],
        dense_heads: Sequence[DenseHead],
        adjusting: Sequence[Constraint],
        mirror: bool,
    ):
        super().__init__()
        self.model = model
        self.adjusting = nn.ModuleList(adjusting)  # moves and switches to eval with the model
        self.heads = list(heads)
        self.dense_heads = list(dense_heads)
        self.mirror = mirror
        self.outputs = output_layout(self.heads, self.dense_heads, bool(adjusting))

    @classmethod
    def of(cls, engine: Engine, mirror: bool) -> DeployedModel:
        """The engine's model, heads and output-adjusting constraints, in eval mode."""
        if engine.model is None:
            raise UsageError("the engine has no model yet: call fit() or load_checkpoint() first")
        adjusting = [c for c in engine.constraints if c.adjusts_outputs]
        deployed = cls(engine.model, engine.heads, engine.dense_heads, adjusting, mirror)
        return deployed.eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        adjusted, raw, maps = predicted_outputs(
            self.model,
            self.heads,
            self.dense_heads,
            list(self.adjusting),
            normalize_batch(image),
            self.mirror,
        )
        by_kind = {"probabilities": adjusted, "raw_probabilities": raw, "mask_probabilities": maps}
        return tuple(by_kind[output.holds][output.task] for output in self.outputs)


def output_layout(
    heads: Sequence[TaskHead], dense_heads: Sequence[DenseHead], adjusted: bool
) -> list[Output]:
    """The graph's outputs: one per task named after it, plus ``<task>_raw`` for every
    image-level task when a constraint adjusts outputs (what the model itself said, as
    ``metrics.json``'s ``raw_auc`` scores it). A name that two outputs (or the input)
    would share is a UsageError."""
    outputs = [Output(h.name, h.name, "probabilities") for h in heads]
    if adjusted:
        outputs += [Output(h.name + RAW_SUFFIX, h.name, "raw_probabilities") for h in heads]
    outputs += [Output(h.name, h.name, "mask_probabilities") for h in dense_heads]
    names = [INPUT_NAME, *(o.name for o in outputs)]
    clashing = sorted({name for name in names if names.count(name) > 1})
    if clashing:
        raise UsageError(
            f"cannot export: the graph's input and outputs would share the name(s) "
            f"{', '.join(clashing)} (the input is {INPUT_NAME!r}, each task's output is its "
            f"name, raw outputs add {RAW_SUFFIX!r}); rename the task"
        )
    return outputs
