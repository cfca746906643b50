"""The binary decision at a probability cut-off, and choosing the cut-off on one split to
apply unchanged to others: Youden's J."""

from __future__ import annotations

import math

import numpy as np


def positive_at(probabilities, threshold: float) -> np.ndarray:
    """The binary decision everywhere mtlkit makes one (metrics, predictions, plots, Grad-CAM
    targets, the ONNX metadata): positive when ``p > threshold``, so a probability equal to
    the threshold is negative. A bool array (a bool scalar for a scalar)."""
    return np.asarray(probabilities) > threshold


def youden_threshold(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """The cut-off that maximises Youden's J = SE + SP - 1 on ``(y_true, y_prob)``, e.g. the
    validation split, for the rule of the metrics (positive when ``p > threshold``).

    Candidates are the midpoints between consecutive distinct probabilities (as pROC's
    thresholds), so the cut-off never equals an observed probability. Of cut-offs with the
    same J (compared exactly, in counts) the lowest wins: it keeps the higher sensitivity.
    NaN with one class or a single distinct probability.
    """
    y = np.asarray(y_true) == 1
    p = np.asarray(y_prob, dtype=np.float64)
    m, n = int(y.sum()), int((~y).sum())
    distinct = np.unique(p)
    if not m or not n or len(distinct) < 2:
        return math.nan
    cuts = (distinct[:-1] + distinct[1:]) / 2
    positives, negatives = np.sort(p[y]), np.sort(p[~y])
    true_positive = m - np.searchsorted(positives, cuts, side="right")
    true_negative = np.searchsorted(negatives, cuts, side="right")
    j_times_mn = true_positive * n + true_negative * m  # (SE + SP) m n: exact integers
    return float(cuts[int(np.argmax(j_times_mn))])  # argmax: the first, i.e. lowest, best
