"""Region-of-interest crops, the in-memory RoI cache and the per-epoch augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from .config import AugmentationConfig, RoiConfig
from .data import Sample
from .errors import DataError

# Grayscale ultrasound: one channel, scaled to roughly zero mean and unit spread.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


def roi_box(sample: Sample, image: np.ndarray, roi: RoiConfig) -> tuple[int, int, int, int]:
    """The crop ``(x0, y0, x1, y1)`` for one image: its box or mask extent plus the margin."""
    height, width = image.shape[:2]
    if roi.mode == "image":
        return 0, 0, width, height
    if roi.mode == "mask":
        if sample.mask is None:
            raise DataError(f"image {sample.image_id}: roi.mode is 'mask' but it has no mask")
        ys, xs = np.nonzero(sample.mask())
        if len(xs) == 0:
            raise DataError(f"image {sample.image_id}: its mask is empty")
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    else:
        if sample.box is None:
            raise DataError(f"image {sample.image_id}: roi.mode is 'box' but it has no box")
        box = sample.box
    x0, y0, x1, y1 = box
    mx, my = roi.margin * (x1 - x0), roi.margin * (y1 - y0)
    x0, y0 = max(0, int(round(x0 - mx))), max(0, int(round(y0 - my)))
    x1, y1 = min(width, int(round(x1 + mx))), min(height, int(round(y1 + my)))
    if x1 <= x0 or y1 <= y0:
        raise DataError(
            f"image {sample.image_id}: box {box} lies outside the {width}x{height} image"
        )
    return x0, y0, x1, y1


def load_roi(sample: Sample, roi: RoiConfig, size: int) -> np.ndarray:
    """The sample's RoI as a ``size`` x ``size`` uint8 array (the paper resizes RoIs to squares)."""
    image = sample.image()
    if image.ndim != 2 or image.dtype != np.uint8:
        raise DataError(
            f"image {sample.image_id}: expected 2-D uint8 grayscale, got "
            f"{image.dtype} {image.shape}"
        )
    x0, y0, x1, y1 = roi_box(sample, image, roi)
    crop = Image.fromarray(image[y0:y1, x0:x1])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def build_cache(samples: Sequence[Sample], roi: RoiConfig, size: int) -> torch.Tensor:
    """Decode and crop every sample once: a uint8 tensor of shape (N, 1, size, size).

    Later epochs read this instead of decoding images again; augmentation still draws
    new random crops every epoch.
    """
    cache = torch.empty((len(samples), 1, size, size), dtype=torch.uint8)
    for index, sample in enumerate(samples):
        cache[index, 0] = torch.tensor(load_roi(sample, roi, size))
    return cache


def train_transform(aug: AugmentationConfig, size: int) -> v2.Transform:
    """Random crop and scale, flips and brightness/contrast jitter on a uint8 RoI."""
    steps: list[v2.Transform] = []
    if aug.enabled:
        steps.append(v2.RandomResizedCrop(size, scale=aug.scale, ratio=aug.ratio, antialias=True))
        if aug.hflip:
            steps.append(v2.RandomHorizontalFlip(aug.hflip))
        if aug.vflip:
            steps.append(v2.RandomVerticalFlip(aug.vflip))
        if aug.brightness or aug.contrast:
            steps.append(v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast))
    steps += _to_model_input()
    return v2.Compose(steps)


def _to_model_input() -> list[v2.Transform]:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[PIXEL_MEAN], std=[PIXEL_STD]),
    ]


def normalize_batch(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> normalised float, as the end of :func:`train_transform` does."""
    return (batch.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD
