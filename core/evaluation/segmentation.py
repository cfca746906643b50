"""Segmentation metrics over a split: Dice and IoU of the predicted lesion masks."""

from __future__ import annotations

import math

import numpy as np


def overlap_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU (N,) of boolean masks (N, H, W). An image where both masks
    are empty scores 1 (nothing to find, nothing found); one where only one is empty, 0."""
    predicted = predicted.reshape(len(predicted), -1).astype(bool)
    truth = truth.reshape(len(truth), -1).astype(bool)
    overlap = (predicted & truth).sum(axis=1).astype(np.float64)
    sizes = predicted.sum(axis=1) + truth.sum(axis=1).astype(np.float64)
    union = sizes - overlap
    empty = sizes == 0
    dice = np.where(empty, 1.0, 2 * overlap / np.where(empty, 1, sizes))
    iou = np.where(empty, 1.0, overlap / np.where(empty, 1, union))
    return dice, iou


def segmentation_metrics(
    probabilities: np.ndarray, masks: np.ndarray, known: np.ndarray, threshold: float
) -> dict[str, float | int]:
    """``{"n", "dice", "iou"}``: the mean per-image Dice and IoU at ``threshold`` over the
    images with a mask (``known``); NaN without any. ``probabilities`` (N, H, W) per pixel,
    ``masks`` (N, H, W) 0/1."""
    known = np.asarray(known, dtype=bool)
    if not known.any():
        return {"n": 0, "dice": math.nan, "iou": math.nan}
    dice, iou = overlap_scores(probabilities[known] > threshold, masks[known] > 0)
    return {"n": int(known.sum()), "dice": float(dice.mean()), "iou": float(iou.mean())}
