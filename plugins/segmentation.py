"""The lesion segmentation head: a light FPN-style decoder over the backbone's feature maps,
one sigmoid output per pixel. Beside the classification heads it is an auxiliary task that
teaches the shared backbone where the lesion is; trained on whole images it is the
localiser of the automatic RoI (``data.roi.mode: auto``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mtlkit import DenseHead, OptionsModel


class SegmentationOptions(OptionsModel):
    name: str = Field("lesion", description="task name, unique in the run")
    width: int = Field(64, ge=4, le=1024, description="channels of the decoder")
    min_reduction: int = Field(
        4,
        ge=1,
        le=64,
        description="finest backbone map the decoder reads, as its size ratio to the input "
        "(4: a quarter of the input side; 2 is finer and slower)",
    )
    threshold: float = Field(
        0.5, gt=0, lt=1, description="probability above which a pixel is lesion (Dice, IoU, RoI)"
    )


class SegmentationHead(DenseHead):
    """The lesion mask of the image (the input crop), from the image's mask annotation."""

    Options = SegmentationOptions

    def __init__(self, options: SegmentationOptions):
        super().__init__(options.name)
        self.options = options
        self.min_reduction = options.min_reduction
        self.threshold = options.threshold

    def build_decoder(self, channels: Sequence[int], reductions: Sequence[int]) -> nn.Module:
        return PyramidDecoder(list(channels), self.options.width)


class PyramidDecoder(nn.Module):
    """Feature-pyramid decoder: each map projected to ``width`` channels, merged top-down
    (coarse upsampled and added to the finer), then two 3x3 convolutions at the finest
    resolution and a 1x1 to one logit per pixel."""

    def __init__(self, channels: list[int], width: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, kernel_size=1) for c in channels)
        self.refine = nn.Sequential(
            _conv_block(width),
            _conv_block(width),
            nn.Conv2d(width, 1, kernel_size=1),
        )

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        merged = self.lateral[-1](maps[-1])
        for lateral, fine in zip(reversed(self.lateral[:-1]), reversed(maps[:-1]), strict=True):
            merged = lateral(fine) + F.interpolate(
                merged, size=fine.shape[-2:], mode="bilinear", align_corners=False
            )
        return self.refine(merged)


def _conv_block(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )
