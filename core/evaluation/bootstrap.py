"""Bootstrap confidence intervals of a diagnostic-accuracy statistic and the paired
bootstrap comparison of two models, stratified as R's pROC does by default: positives and
negatives are resampled separately, so every resample keeps both classes.

With ``clusters`` (one label per image, e.g. its patient) whole clusters are resampled
instead of images (the cluster bootstrap): images of one patient are not independent.
Clusters are stratified by whether they hold any positive image, and resampled within
their stratum. Resamples come from ``numpy.random.default_rng(seed)``: the same data and
seed give the same interval, and two models compared with the same seed see the same
resamples (paired).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from mtlkit.evaluation.auc import binary_auc, weighted_aucs

Statistic = str | Callable[[np.ndarray, np.ndarray], float]
"""``"auc"`` (computed for all resamples at once) or a function ``(y_true, y_prob) -> float``
called once per resample, NaN where it is undefined."""

CELLS_PER_BLOCK = 4_000_000  # resamples x images held in memory at once


class BootstrapInterval(NamedTuple):
    """A statistic on the data, its percentile interval and how many resamples gave a
    value (a resample where the statistic is undefined is left out)."""

    estimate: float
    low: float
    high: float
    valid: int


def bootstrap_ci(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    statistic: Statistic = "auc",
    clusters: Sequence[Any] | np.ndarray | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapInterval:
    """The percentile bootstrap interval at ``level`` of ``statistic`` over ``resamples``
    stratified resamples of the images, or of ``clusters`` when given. ``y_true`` holds 0
    and 1 only (leave unlabelled images out first). All NaN when no resample gives a
    value (one class only)."""
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    (values,) = _resampled(y, [p], statistic, clusters, resamples, seed)
    low, high = _percentiles(values[np.isfinite(values)], level)
    return BootstrapInterval(_value(statistic, y, p), low, high, int(np.isfinite(values).sum()))


def paired_bootstrap(
    y_true: np.ndarray,
    prob_1: np.ndarray,
    prob_2: np.ndarray,
    statistic: Statistic = "auc",
    clusters: Sequence[Any] | np.ndarray | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Two models scored on the same images, compared on the same resamples.

    Returns ``estimate1``, ``estimate2``, ``difference`` (1 - 2 on the data), ``ci`` (the
    percentile interval of the resampled differences at ``level``), ``p_value`` and
    ``valid`` (resamples where both statistics are defined). The two-sided p-value is
    ``min(1, 2 (1 + k) / (B + 1))``, where k counts the B resampled differences on the
    far side of 0 (``<= 0`` when the difference is positive, ``>= 0`` otherwise; the +1
    counts the data as a resample, so p is never 0): two identical models give p = 1.
    """
    y = np.asarray(y_true)
    p1, p2 = np.asarray(prob_1, dtype=np.float64), np.asarray(prob_2, dtype=np.float64)
    first, second = _resampled(y, [p1, p2], statistic, clusters, resamples, seed)
    usable = np.isfinite(first) & np.isfinite(second)
    differences = first[usable] - second[usable]
    count = len(differences)
    if count:
        beyond = min(int((differences <= 0).sum()), int((differences >= 0).sum()))
        p_value = min(1.0, 2 * (1 + beyond) / (count + 1))
    else:
        p_value = math.nan
    estimate1, estimate2 = _value(statistic, y, p1), _value(statistic, y, p2)
    return {
        "estimate1": estimate1,
        "estimate2": estimate2,
        "difference": estimate1 - estimate2,
        "ci": list(_percentiles(differences, level)),
        "p_value": p_value,
        "valid": count,
    }


def resample_weights(
    y_true: np.ndarray,
    clusters: Sequence[Any] | np.ndarray | None,
    resamples: int,
    rng: np.random.Generator,
) -> Iterator[np.ndarray]:
    """Blocks of resamples as weights (resamples x images, how often each image is drawn):
    every stratum's units (clusters, or images) drawn with replacement as many times as the
    stratum has units."""
    positive = np.asarray(y_true) == 1
    n = len(positive)
    if clusters is None:
        unit = np.arange(n)
    else:
        if len(clusters) != n:
            raise ValueError(f"{len(clusters)} cluster labels for {n} images")
        unit = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)[1].ravel()
    units = int(unit.max()) + 1 if n else 0
    unit_positive = np.zeros(units, dtype=bool)
    unit_positive[unit[positive]] = True
    strata = [np.flatnonzero(unit_positive), np.flatnonzero(~unit_positive)]
    column = np.zeros(units, dtype=np.int64)
    for members in strata:
        column[members] = np.arange(len(members))
    images = [np.flatnonzero(unit_positive[unit]), np.flatnonzero(~unit_positive[unit])]
    block = max(1, CELLS_PER_BLOCK // max(n, 1))
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        weights = np.zeros((rows, n), dtype=np.int64)
        for members, chosen in zip(strata, images, strict=True):
            k = len(members)
            if not k:
                continue
            draws = rng.integers(0, k, size=(rows, k)) + k * np.arange(rows)[:, None]
            counts = np.bincount(draws.ravel(), minlength=rows * k).reshape(rows, k)
            weights[:, chosen] = np.take(counts, column[unit[chosen]], axis=1)
        yield weights


def _resampled(
    y: np.ndarray,
    scores: list[np.ndarray],
    statistic: Statistic,
    clusters: Sequence[Any] | np.ndarray | None,
    resamples: int,
    seed: int,
) -> list[np.ndarray]:
    """The statistic of each score on the same resamples."""
    if statistic != "auc" and not callable(statistic):
        raise ValueError(f"unknown statistic {statistic!r}: 'auc' or a function (y, p)")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in scores]
    for weights in resample_weights(y, clusters, resamples, rng):
        for part, score in zip(parts, scores, strict=True):
            if statistic == "auc":
                part.append(weighted_aucs(y, score, weights))
            else:
                part.append(np.array([_each(statistic, y, score, w) for w in weights]))
    return [np.concatenate(p) if p else np.zeros(0) for p in parts]


def _each(statistic: Callable, y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> float:
    picked = np.repeat(np.arange(len(y)), weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(statistic(y[picked], p[picked]))


def _value(statistic: Statistic, y: np.ndarray, p: np.ndarray) -> float:
    """The statistic on the data themselves."""
    if statistic == "auc":
        return binary_auc(y, p)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(statistic(y, p))


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval (linear interpolation, R's default quantile type 7)."""
    if not len(values):
        return math.nan, math.nan
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
