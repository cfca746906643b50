"""Heatmaps drawn over the RoI, as PNG bytes (deterministic: no metadata)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image

DISPLAY = 160  # pixels: a 32 or 64 px RoI is too small to look at


def overlay_image(roi: np.ndarray, cam: np.ndarray, size: int = DISPLAY) -> np.ndarray:
    """The uint8 RoI (H, W) in gray with the CAM (H, W, in [0, 1]) as a jet heatmap on top,
    as an RGB uint8 array of ``size`` x ``size``."""
    gray = np.repeat((roi.astype(np.float32) / 255.0)[..., None], 3, axis=2)
    blended = show_cam_on_image(gray, np.clip(cam, 0, 1), use_rgb=True, image_weight=0.55)
    picture = Image.fromarray(blended).resize((size, size), Image.BILINEAR)
    return np.asarray(picture)


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def roi_png(roi: np.ndarray, size: int = DISPLAY) -> bytes:
    """The RoI alone, gray, as PNG bytes."""
    return png_bytes(np.asarray(Image.fromarray(roi).resize((size, size), Image.BILINEAR)))
