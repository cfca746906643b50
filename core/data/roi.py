"""Region-of-interest crops: the box around a lesion (from a box, a mask or the whole image)
plus a margin, cut out and resized to the model's square input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from mtlkit.config.schema import RoiConfig
from mtlkit.data.samples import Sample
from mtlkit.errors import DataError

Box = tuple[int, int, int, int]


Locator = Callable[[np.ndarray], "Box | None"]
"""Finds the lesion in a whole 2-D uint8 image (``data.roi.mode: auto``): its box
``(x0, y0, x1, y1)`` in the image's pixels, end exclusive, or None when it finds none."""


_NOT_LOCATED: Any = object()  # roi_box's `found` not given: no localiser ran


def roi_box(
    sample: Sample, image: np.ndarray, roi: RoiConfig, found: Box | None = _NOT_LOCATED
) -> Box:
    """The crop ``(x0, y0, x1, y1)`` for one image: its box or mask extent plus the margin;
    with ``roi.mode: auto`` the box a localiser ``found`` (the whole image when None), which
    must then be given."""
    height, width = image.shape[:2]
    if roi.mode == "auto" and found is _NOT_LOCATED:
        raise DataError(
            "roi.mode is 'auto': its RoI is the box a localiser finds, which this step did "
            "not run; it cuts drawn RoIs when roi.train_mode is set"
        )
    if roi.mode == "image" or (roi.mode == "auto" and found is None):
        return 0, 0, width, height
    if roi.mode == "auto":
        box = found
        if not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
            raise DataError(f"the localiser's box {box} is outside the {width}x{height} image")
    elif roi.mode == "mask":
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
    return with_margin(box, width, height, roi.margin, roi.shape)


def with_margin(box: Box, width: int, height: int, margin: float, shape: str = "stretch") -> Box:
    """``box`` grown by ``margin`` x its size on each side, clipped to the image; with
    ``shape`` "square" a square around the box's centre instead (see :func:`square_box`)."""
    if shape == "square":
        return square_box(box, width, height, margin)
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    x0, y0 = max(0, int(round(x0 - mx))), max(0, int(round(y0 - my)))
    x1, y1 = min(width, int(round(x1 + mx))), min(height, int(round(y1 + my)))
    return x0, y0, x1, y1


def square_box(box: Box, width: int, height: int, margin: float) -> Box:
    """The square of side ``(1 + 2 margin)`` x ``box``'s longer side around its centre,
    moved inside the image where it sticks out (rather than cut, which would stretch the
    lesion again); only a square larger than the image itself is cut to it."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)

    def span(start: int, end: int, limit: int) -> tuple[int, int]:
        length = min(limit, max(1, int(round(side))))
        first = int(round((start + end - length) / 2))
        first = min(max(0, first), limit - length)
        return first, first + length

    left, right = span(x0, x1, width)
    top, bottom = span(y0, y1, height)
    return left, top, right, bottom


def crop_and_resize(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The box cut from the image, resized to a ``size`` x ``size`` uint8 square (the paper
    resizes RoIs to squares)."""
    x0, y0, x1, y1 = box
    crop = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def crop_mask(sample: Sample, image: np.ndarray, box: Box, size: int) -> np.ndarray | None:
    """The sample's lesion mask cut with the image's RoI ``box`` and resized as the RoI is,
    0/1 uint8; None when the sample has no mask. An empty mask is a valid one (an image
    without a lesion)."""
    if sample.mask is None:
        return None
    mask = np.asarray(sample.mask())
    if mask.shape != image.shape[:2]:
        raise DataError(
            f"its mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
            f"{image.shape[1]}x{image.shape[0]}"
            if mask.ndim == 2
            else f"its mask has shape {mask.shape}; a mask is 2-D"
        )
    scaled = (mask > 0).astype(np.uint8) * 255
    return (crop_and_resize(scaled, box, size) >= 128).astype(np.uint8)
