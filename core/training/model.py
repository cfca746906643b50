"""The multi-task network: one shared backbone, one head module per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlkit.components.interfaces import TaskHead
from mtlkit.errors import UsageError


class MultiTaskModel(nn.Module):
    """Backbone features -> one output per task. ``forward`` returns ``{task: logits}``."""

    def __init__(self, backbone: nn.Module, heads: Sequence[TaskHead]):
        super().__init__()
        # timm: pooled features are ``head_hidden_size`` wide where a model has a pre-logits
        # layer (e.g. MobileNetV3), else ``num_features``.
        width = getattr(backbone, "head_hidden_size", None) or getattr(
            backbone, "num_features", None
        )
        if not isinstance(width, int) or width < 1:
            raise UsageError(
                f"backbone {type(backbone).__name__} has no integer num_features; a backbone "
                "must return pooled features and say their width"
            )
        self.backbone = backbone
        self.heads = nn.ModuleDict({head.name: head.build_module(width) for head in heads})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        return {name: head(features) for name, head in self.heads.items()}
