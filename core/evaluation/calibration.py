"""Calibration of a binary task's probabilities: the Brier score, the expected calibration
error (ECE) and the data of a reliability diagram.

Bins are ``bins`` equal-width intervals of [0, 1]: image i falls in bin
``min(floor(p_i x bins), bins - 1)``, so bin k is [k/bins, (k+1)/bins) and the top bin
also holds p = 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DEFAULT_BINS = 10


def brier_score(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean squared difference between probability and outcome (0 is perfect); NaN for no
    images."""
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_prob, dtype=np.float64)
    return float(np.mean((p - y) ** 2)) if len(y) else math.nan


def reliability(y_true: np.ndarray, y_prob: np.ndarray, bins: int = DEFAULT_BINS) -> list[dict]:
    """One entry per bin, empty bins included: its ``range`` [low, high], ``n`` images, the
    ``mean_predicted`` probability and the ``observed`` share of positives (NaN when
    empty)."""
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_prob, dtype=np.float64)
    index = bin_index(p, bins)
    out = []
    for k in range(bins):
        inside = index == k
        count = int(inside.sum())
        out.append(
            {
                "range": [k / bins, (k + 1) / bins],
                "n": count,
                "mean_predicted": float(p[inside].mean()) if count else math.nan,
                "observed": float(y[inside].mean()) if count else math.nan,
            }
        )
    return out


def expected_calibration_error(
    y_true: np.ndarray, y_prob: np.ndarray, bins: int = DEFAULT_BINS
) -> float:
    """ECE: the mean over images of |mean predicted - observed share| of their bin, i.e.
    the bins' gaps weighted by their share of images; NaN for no images."""
    return _ece(reliability(y_true, y_prob, bins))


def calibration(y_true: np.ndarray, y_prob: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """``brier``, ``ece`` and the reliability ``bins`` (see :func:`reliability`) of one task."""
    rows = reliability(y_true, y_prob, bins)
    return {"brier": brier_score(y_true, y_prob), "ece": _ece(rows), "bins": rows}


def bin_index(y_prob: np.ndarray, bins: int) -> np.ndarray:
    """Each probability's bin, 0 to ``bins - 1``."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    return np.clip(np.floor(np.asarray(y_prob, dtype=np.float64) * bins), 0, bins - 1).astype(int)


def _ece(rows: list[dict]) -> float:
    total = sum(r["n"] for r in rows)
    if not total:
        return math.nan
    gaps = sum(r["n"] * abs(r["mean_predicted"] - r["observed"]) for r in rows if r["n"])
    return float(gaps / total)
