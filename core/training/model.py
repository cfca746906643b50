"""The multi-task network: one shared backbone, one head module per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.components.contracts import feature_width
from mtlkit.components.interfaces import DenseHead, TaskHead
from mtlkit.errors import UsageError
from mtlkit.training.feature_maps import feature_maps_of, forward_with_maps


class MultiTaskModel(nn.Module):
    """Backbone features -> one output per task. ``forward`` returns ``{task: logits}``:
    (N, outputs) for a head over pooled features, (N, 1, H, W) at the input's resolution
    for a dense head over the backbone's feature maps.

    Without dense heads the module tree is what it always was (``backbone``, ``heads``), so
    older checkpoints load; dense heads add ``decoders``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: Sequence[TaskHead],
        dense_heads: Sequence[DenseHead] = (),
    ):
        super().__init__()
        width = feature_width(backbone)
        if width is None:
            raise UsageError(
                f"backbone {type(backbone).__name__} has no integer num_features; a backbone "
                "must return pooled features and say their width"
            )
        self.backbone = backbone
        self.heads = nn.ModuleDict({head.name: head.build_module(width) for head in heads})
        self._maps = feature_maps_of(backbone) if dense_heads else None
        self._reads: dict[str, list[int]] = {}
        if dense_heads:
            self.decoders = nn.ModuleDict()
            for head in dense_heads:
                indices, channels, reductions = self._maps.select(head.min_reduction)
                self._reads[head.name] = indices
                self.decoders[head.name] = head.build_decoder(channels, reductions)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._maps is None:
            features = self.backbone(images)
            return {name: head(features) for name, head in self.heads.items()}
        features, maps = forward_with_maps(self.backbone, self._maps, images)
        outputs = {name: head(features) for name, head in self.heads.items()}
        for name, decoder in self.decoders.items():
            logits = decoder([maps[i] for i in self._reads[name]])
            if logits.shape[-2:] != images.shape[-2:]:
                logits = F.interpolate(
                    logits, size=images.shape[-2:], mode="bilinear", align_corners=False
                )
            outputs[name] = logits
        return outputs
