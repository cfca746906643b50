"""The multi-task network: one shared backbone, one head module per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlkit.components.contracts import feature_width
from mtlkit.components.interfaces import TaskHead
from mtlkit.errors import UsageError


class MultiTaskModel(nn.Module):
    """Backbone features -> one output per task. ``forward`` returns ``{task: logits}``."""

    def __init__(self, backbone: nn.Module, heads: Sequence[TaskHead]):
        super().__init__()
        width = feature_width(backbone)
        if width is None:
            raise UsageError(
                f"backbone {type(backbone).__name__} has no integer num_features; a backbone "
                "must return pooled features and say their width"
            )
        self.backbone = backbone
        self.heads = nn.ModuleDict({head.name: head.build_module(width) for head in heads})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        return {name: head(features) for name, head in self.heads.items()}
