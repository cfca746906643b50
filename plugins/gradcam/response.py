"""The CAM response against the distance to the lesion (Li et al. 2022, Supplementary
Figure S1: intratumoral vs peritumoral attention), as numbers for a JSON file."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import distance_transform_edt


def midpoints(edges: np.ndarray) -> list[float]:
    return [round(float(m), 4) for m in (edges[:-1] + edges[1:]) / 2]


def centre_distance(size: tuple[int, int]) -> np.ndarray:
    """Per pixel of a (H, W) RoI: the distance to its centre, 1 at the middle of an edge."""
    height, width = size
    ys = (np.arange(height) + 0.5 - height / 2) / (height / 2)
    xs = (np.arange(width) + 0.5 - width / 2) / (width / 2)
    return np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)


def radial_profile(cams: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Mean CAM value (over pixels and images) in ``bins`` rings of normalised distance from
    the RoI centre, 0 (centre) to 1 (middle of an edge; the corners beyond are left out)."""
    distance = centre_distance(cams.shape[1:])
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.digitize(distance, edges[1:-1])  # 0 .. bins-1
    inside = distance <= 1.0
    means = []
    for b in range(bins):
        where = inside & (index == b)
        means.append(float(cams[:, where].mean()) if where.any() and len(cams) else None)
    return {
        "distance": midpoints(edges),
        "mean_cam": means,
        "images": len(cams),
    }


def signed_lesion_distance(mask: np.ndarray) -> np.ndarray:
    """Per pixel: the distance to the lesion boundary in units of the lesion's equivalent
    radius (sqrt(area / pi)); negative inside the lesion, positive outside."""
    mask = mask.astype(bool)
    radius = max(np.sqrt(mask.sum() / np.pi), 1.0)
    outside = distance_transform_edt(~mask)
    inside = distance_transform_edt(mask)
    return np.where(mask, -inside, outside) / radius


def mask_profile(
    cams: np.ndarray, masks: np.ndarray, ring: float = 0.5, bins: int = 12
) -> dict[str, Any]:
    """Mean CAM inside the lesion, in the peritumoral ring (up to ``ring`` lesion radii
    outside its boundary) and in the background beyond, plus the mean CAM against the
    signed distance to the boundary (-1 = lesion centre, 0 = boundary, 2 = two radii out)."""
    regions = {"intratumoral": [], "peritumoral": [], "background": []}
    edges = np.linspace(-1.0, 2.0, bins + 1)
    sums, counts = np.zeros(bins), np.zeros(bins)
    for cam, mask in zip(cams, masks, strict=False):
        if not mask.any():
            continue
        distance = signed_lesion_distance(mask)
        parts = {
            "intratumoral": distance < 0,
            "peritumoral": (distance >= 0) & (distance <= ring),
            "background": distance > ring,
        }
        for region, where in parts.items():
            if where.any():
                regions[region].append(float(cam[where].mean()))
        index = np.digitize(distance, edges) - 1
        valid = (index >= 0) & (index < bins)
        np.add.at(sums, index[valid], cam[valid])
        np.add.at(counts, index[valid], 1)
    return {
        "ring": ring,
        "regions": {r: (float(np.mean(v)) if v else None) for r, v in regions.items()},
        "distance": midpoints(edges),
        "mean_cam": [float(s / c) if c else None for s, c in zip(sums, counts, strict=False)],
        "images": int(sum(bool(m.any()) for m in masks)),
    }
