"""From a uint8 RoI to the model's input: the per-epoch augmentation and the normalisation."""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from mtlkit.config.schema import AugmentationConfig
from mtlkit.data.ultrasound_augment import ultrasound_steps

# Grayscale ultrasound: one channel, scaled to roughly zero mean and unit spread.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


class PhotometricTrivialAugment(v2.TrivialAugmentWide):
    """TrivialAugment Wide (one operation per image, at a uniformly drawn magnitude) with
    only the operations that leave geometry alone: no shear, translation or rotation, so a
    lesion mask stays aligned. Colour (saturation) is left out too: on one grey channel it
    does nothing. A mask in the sample (segmentation runs) passes through unchanged, which
    torchvision's own refuses."""

    _AUGMENTATION_SPACE = {
        name: op
        for name, op in v2.TrivialAugmentWide._AUGMENTATION_SPACE.items()
        if name not in {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Color"}
    }

    def forward(self, *inputs):
        if len(inputs) > 1 and any(isinstance(x, tv_tensors.Mask) for x in inputs):
            apply = super().forward  # (not inside the generator: super() needs the frame)
            return tuple(x if isinstance(x, tv_tensors.Mask) else apply(x) for x in inputs)
        return super().forward(*inputs)


def train_transform(aug: AugmentationConfig, size: int) -> v2.Transform:
    """The per-epoch augmentation of a uint8 RoI, then the model's normalisation: random
    crop and scale, flips, then the photometric steps (the ultrasound ones, brightness and
    contrast jitter, TrivialAugment), each only when configured."""
    steps: list[v2.Transform] = []
    if aug.enabled:
        steps.append(v2.RandomResizedCrop(size, scale=aug.scale, ratio=aug.ratio, antialias=True))
        if aug.hflip:
            steps.append(v2.RandomHorizontalFlip(aug.hflip))
        if aug.vflip:
            steps.append(v2.RandomVerticalFlip(aug.vflip))
        steps += ultrasound_steps(aug.ultrasound)
        if aug.brightness or aug.contrast:
            steps.append(v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast))
        if aug.trivial:
            steps.append(PhotometricTrivialAugment())
    steps += _to_model_input()
    return v2.Compose(steps)


def draws_nothing(aug: AugmentationConfig) -> bool:
    """Whether :func:`train_transform` is free of random draws (augmentation off), so that
    it may take a whole batch of RoIs in one call with the same result per image."""
    return not aug.enabled


def _to_model_input() -> list[v2.Transform]:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[PIXEL_MEAN], std=[PIXEL_STD]),
    ]


def normalize_batch(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> normalised float, as the end of :func:`train_transform` does."""
    return (batch.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD
