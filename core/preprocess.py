"""Region-of-interest crops, the in-memory RoI cache and the per-epoch augmentation."""

from __future__ import annotations

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
            raise DataError("roi.mode is 'mask' but it has no mask")
        mask = sample.mask()
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"its mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}"
            )
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            raise DataError("its mask is empty")
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    else:
        if sample.box is None:
            raise DataError("roi.mode is 'box' but it has no box")
        box = sample.box
        if box[2] > width or box[3] > height:
            raise DataError(f"box {box} extends outside the {width}x{height} image")
    x0, y0, x1, y1 = box
    mx, my = roi.margin * (x1 - x0), roi.margin * (y1 - y0)
    x0, y0 = max(0, int(round(x0 - mx))), max(0, int(round(y0 - my)))
    x1, y1 = min(width, int(round(x1 + mx))), min(height, int(round(y1 + my)))
    return x0, y0, x1, y1


def crop_and_resize(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The box cut from the image, resized to a ``size`` x ``size`` uint8 square (the paper
    resizes RoIs to squares)."""
    x0, y0, x1, y1 = box
    crop = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


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
