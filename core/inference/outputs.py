"""What the model predicts for one batch: shared by every inference path and by the exported
ONNX graph (``mtlkit.export.graph``), so they all compute the same thing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mtlkit.components.interfaces import Constraint, DenseHead, TaskHead

Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]
"""A model's forward pass: normalised images (N, 1, S, S) to ``{task: logits}``."""


def adjusted_probabilities(
    constraints: Sequence[Constraint], probabilities: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``probabilities`` after every constraint's ``adjust``, in order; each constraint sees
    the previous one's result, and tasks it leaves out keep their probabilities."""
    for constraint in constraints:
        probabilities = {**probabilities, **constraint.adjust(probabilities)}
    return probabilities


def predicted_outputs(
    model: Forward,
    heads: Sequence[TaskHead],
    dense_heads: Sequence[DenseHead],
    adjusting: Sequence[Constraint],
    images: torch.Tensor,
    mirror: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """What the model predicts for a batch of normalised images: each task's probabilities
    after the ``adjusting`` constraints, the raw ones, and each dense task's per-pixel
    probabilities (N, S, S). With ``mirror`` every output is the mean over each image and
    its mirror image (the mirrored maps are mirrored back first), and the adjustment is
    applied to that mean. The engine and the exported ONNX graph both compute this."""
    views = [False, True] if mirror else [False]
    probs: dict[str, torch.Tensor] = {}
    maps: dict[str, torch.Tensor] = {}
    for mirrored in views:
        outputs = model(torch.flip(images, dims=[3]) if mirrored else images)
        for head in heads:
            p = head.probabilities(outputs[head.name].float())
            probs[head.name] = probs[head.name] + p if head.name in probs else p
        for head in dense_heads:
            m = head.probabilities(outputs[head.name].float())
            m = torch.flip(m, dims=[2]) if mirrored else m
            maps[head.name] = maps[head.name] + m if head.name in maps else m
    probs = {name: p / len(views) for name, p in probs.items()}
    maps = {name: m / len(views) for name, m in maps.items()}
    return adjusted_probabilities(adjusting, probs), probs, maps
