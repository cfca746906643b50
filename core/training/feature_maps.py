"""The dense-feature contract: the spatial feature maps a backbone provides for heads that
predict per pixel (:class:`~mtlkit.DenseHead`).

A backbone provides them in one of two ways, checked in this order:

- its own ``forward_dense(images) -> (pooled, maps)``, with ``maps`` the list of feature
  maps finest first and ``feature_info`` describing them;
- timm's ``forward_intermediates(images)`` and ``forward_head(final)`` (every timm family:
  ResNets, EfficientNets, ConvNeXts, RegNets, ViTs, ...), where ``forward_head`` of the
  final map gives exactly the pooled features of ``backbone(images)``.

Either way ``feature_info`` is timm's: one ``{"num_chs": C, "reduction": R}`` per map, R
the factor by which the map is smaller than the input. Of several maps at one reduction
(a ViT's blocks) the deepest is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mtlkit.errors import UsageError


@dataclass(frozen=True)
class FeatureMaps:
    """Which of a backbone's intermediate maps dense heads read: their positions in its
    ``feature_info``, channels and reductions, finest first."""

    positions: tuple[int, ...]
    channels: tuple[int, ...]
    reductions: tuple[int, ...]

    def select(self, min_reduction: int) -> tuple[list[int], list[int], list[int]]:
        """The maps at or above ``min_reduction``: (indices into this selection, channels,
        reductions); at least the coarsest map."""
        keep = [i for i, r in enumerate(self.reductions) if r >= min_reduction]
        keep = keep or [len(self.reductions) - 1]
        return keep, [self.channels[i] for i in keep], [self.reductions[i] for i in keep]


def feature_maps_of(backbone: nn.Module) -> FeatureMaps:
    """The maps ``backbone`` provides; :class:`UsageError` naming the contract when none."""
    info = getattr(backbone, "feature_info", None)
    dense = callable(getattr(backbone, "forward_dense", None)) or (
        callable(getattr(backbone, "forward_intermediates", None))
        and callable(getattr(backbone, "forward_head", None))
    )
    entries = _entries(info)
    if not dense or not entries:
        raise UsageError(
            f"backbone {type(backbone).__name__} provides no feature maps, which a "
            "segmentation head needs: use a timm backbone (forward_intermediates and "
            "feature_info), or give it forward_dense(images) -> (pooled, maps) and "
            "feature_info"
        )
    deepest: dict[int, int] = {}
    for position, (_, reduction) in enumerate(entries):
        deepest[reduction] = position  # the last map of each reduction
    positions = tuple(sorted(deepest.values(), key=lambda p: entries[p][1]))
    return FeatureMaps(
        positions=positions,
        channels=tuple(entries[p][0] for p in positions),
        reductions=tuple(entries[p][1] for p in positions),
    )


def forward_with_maps(
    backbone: nn.Module, maps: FeatureMaps, images: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Pooled features (as ``backbone(images)`` gives them) and the selected maps, finest
    first, from one pass through the backbone."""
    if callable(getattr(backbone, "forward_dense", None)):
        pooled, every = backbone.forward_dense(images)
    else:
        final, every = backbone.forward_intermediates(images)
        pooled = backbone.forward_head(final)
    return pooled, [every[p] for p in maps.positions]


def _entries(info: object) -> list[tuple[int, int]]:
    """``(channels, reduction)`` per map of a timm-style ``feature_info``; empty if absent
    or malformed."""
    if isinstance(info, Sequence) and not isinstance(info, str):
        items = list(info)
    elif hasattr(info, "info"):  # timm's FeatureInfo object
        items = list(info.info)
    else:
        return []
    out = []
    for item in items:
        try:
            channels, reduction = int(item["num_chs"]), int(item["reduction"])
        except (KeyError, TypeError, ValueError):
            return []
        if channels <= 0 or reduction <= 0:
            return []
        out.append((channels, reduction))
    return out
