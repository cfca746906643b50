"""The ROC AUC of a binary task and its uncertainty by DeLong's method: the AUC from midranks
(ties count one half), of many weighted resamples at once (for the bootstrap), DeLong's
structural components and variance, the DeLong confidence interval and the paired DeLong
test of two models scored on the same images.

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845, computed with midranks as
in Sun & Xu (2014), IEEE Signal Processing Letters 21:1389-1393; the interval is the one
R's pROC gives (``ci.auc(method="delong")``): AUC +- z x SD, clipped to [0, 1].
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import norm, rankdata


class AucInterval(NamedTuple):
    """An AUC with its confidence interval and the variance it came from."""

    auc: float
    low: float
    high: float
    variance: float


def binary_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC (the Mann-Whitney statistic, ties count one half); NaN when only one class
    is present."""
    positive = np.asarray(y_true) == 1
    if positive.all() or not positive.any():
        return math.nan
    v10, _ = structural_components(positive, np.asarray(y_score, dtype=np.float64))
    return float(v10.mean())


def structural_components(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components ``(V10, V01)``: for each positive, the share of
    negatives it outscores (ties one half); for each negative, the share of positives that
    outscore it. Their means are both the AUC. Needs both classes."""
    positive = np.asarray(y_true) == 1
    score = np.asarray(y_score, dtype=np.float64)
    pos, neg = score[positive], score[~positive]
    m, n = len(pos), len(neg)
    combined = rankdata(np.concatenate([pos, neg]))
    v10 = (combined[:m] - rankdata(pos)) / n
    v01 = 1.0 - (combined[m:] - rankdata(neg)) / m
    return v10, v01


def delong_covariance(
    y_true: np.ndarray, scores: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The AUCs of several models scored on the same images and DeLong's covariance matrix
    of them, ``S10 / m + S01 / n`` (sample covariances of the structural components, m
    positives, n negatives). NaN where a class has fewer than two images."""
    positive = np.asarray(y_true) == 1
    m, n = int(positive.sum()), int((~positive).sum())
    k = len(scores)
    if m == 0 or n == 0:
        return np.full(k, math.nan), np.full((k, k), math.nan)
    parts = [structural_components(positive, s) for s in scores]
    aucs = np.array([v10.mean() for v10, _ in parts])
    if m < 2 or n < 2:
        return aucs, np.full((k, k), math.nan)
    s10 = np.atleast_2d(np.cov(np.stack([v10 for v10, _ in parts])))
    s01 = np.atleast_2d(np.cov(np.stack([v01 for _, v01 in parts])))
    return aucs, s10 / m + s01 / n


def delong_ci(y_true: np.ndarray, y_score: np.ndarray, level: float = 0.95) -> AucInterval:
    """The AUC and its DeLong confidence interval at ``level``: AUC +- z x SD, clipped to
    [0, 1] (as pROC). All NaN with one class; the interval is NaN when a class has only
    one image."""
    aucs, cov = delong_covariance(y_true, [np.asarray(y_score, dtype=np.float64)])
    auc, variance = float(aucs[0]), float(cov[0, 0])
    if not variance >= 0:  # NaN: one class, or a class with a single image
        return AucInterval(auc, math.nan, math.nan, variance)
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(variance)
    return AucInterval(auc, max(0.0, auc - half), min(1.0, auc + half), variance)


def paired_delong(
    y_true: np.ndarray, score_1: np.ndarray, score_2: np.ndarray, level: float = 0.95
) -> dict[str, Any]:
    """DeLong's test of two correlated AUCs (two models scored on the same images).

    Returns ``auc1``, ``auc2``, ``difference`` (auc1 - auc2), its ``variance`` and
    ``ci`` at ``level`` (not clipped), ``z`` and the two-sided ``p_value``. When the
    difference has no variance (identical rankings) z is 0 and p is 1 for no difference,
    else z is +-inf and p is 0. All NaN when a class has fewer than two images.
    """
    aucs, cov = delong_covariance(
        y_true, [np.asarray(score_1, dtype=np.float64), np.asarray(score_2, dtype=np.float64)]
    )
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if math.isnan(variance) or math.isnan(difference):
        z = p_value = math.nan
    elif variance <= 1e-300:  # the same ranking, or a difference known without error
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
        p_value = 1.0 if difference == 0 else 0.0
    else:
        z = difference / math.sqrt(variance)
        p_value = float(2 * norm.sf(abs(z)))
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(max(variance, 0.0))
    return {
        "auc1": float(aucs[0]),
        "auc2": float(aucs[1]),
        "difference": difference,
        "variance": variance,
        "ci": [difference - half, difference + half],
        "z": z,
        "p_value": p_value,
    }


def weighted_aucs(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The AUC of each row of ``weights`` (resamples x images, how often each image is
    drawn): the AUC of every bootstrap resample at once, without copying the data. NaN for
    a row without a positive or a negative. Integer weights give exact, order-free sums."""
    positive = np.asarray(y_true) == 1
    score = np.asarray(y_score, dtype=np.float64)
    negative = np.flatnonzero(~positive)
    negative = negative[np.argsort(score[negative], kind="stable")]  # by score
    below = np.searchsorted(score[negative], score[positive], side="left")
    up_to = np.searchsorted(score[negative], score[positive], side="right")
    w_pos = np.take(weights, np.flatnonzero(positive), axis=1)
    w_neg = np.take(weights, negative, axis=1)
    cumulative = np.zeros((len(weights), len(negative) + 1), dtype=w_neg.dtype)
    np.cumsum(w_neg, axis=1, out=cumulative[:, 1:])
    # per positive, twice (negatives below + half the tied ones); summed with its weight
    twice_below = np.take(cumulative, below, axis=1) + np.take(cumulative, up_to, axis=1)
    twice = (w_pos * twice_below).sum(axis=1)
    pairs = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, twice / (2.0 * pairs), math.nan)
