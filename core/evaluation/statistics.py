"""Summaries of repeated runs (seeds, folds): mean, SD and 95% intervals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import t


def summarize(values: list[float]) -> dict[str, Any]:
    """Mean, SD (n-1), the paper's 95% interval, the 95% CI of the mean and the values.

    NaNs are left out. ``ci95`` is mean +- t x SD as in the paper's tables; ``ci95_mean``
    is the usual confidence interval of the mean, mean +- t x SD / sqrt(n).
    """
    finite = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(finite)
    mean = float(np.mean(finite)) if finite else math.nan
    sd = float(np.std(finite, ddof=1)) if n > 1 else math.nan
    half = float(t.ppf(0.975, n - 1)) * sd if n > 1 else math.nan
    return {
        "mean": mean,
        "sd": sd,
        "ci95": [mean - half, mean + half],
        "ci95_mean": [mean - half / math.sqrt(n), mean + half / math.sqrt(n)]
        if n
        else [math.nan] * 2,
        "values": values,
    }


def paired_t_test(values_a: list[float], values_b: list[float]) -> dict[str, Any]:
    """The paired t-test of two models' metric over the same repeated runs (run i of one
    beside run i of the other, e.g. the same seeds on one fixed test split).

    Pairs with a NaN (or None) on either side are left out. Returns ``mean_difference``
    (a - b), its 95% interval ``ci95`` (mean +- t x SD / sqrt(n) of the differences),
    ``t``, the two-sided ``p_value`` and ``n`` pairs. With fewer than two pairs everything
    but ``n`` (and the mean of one pair) is NaN; differences without variance give p = 1
    when they are all 0, else p = 0 (t +-inf).
    """
    if len(values_a) != len(values_b):
        raise ValueError(f"{len(values_a)} values against {len(values_b)}: pairs needed")
    pairs = [
        (float(a), float(b))
        for a, b in zip(values_a, values_b, strict=True)
        if a is not None and b is not None and not math.isnan(a) and not math.isnan(b)
    ]
    n = len(pairs)
    differences = np.array([a - b for a, b in pairs])
    mean = float(differences.mean()) if n else math.nan
    out = {"mean_difference": mean, "ci95": [math.nan] * 2, "t": math.nan, "p_value": math.nan}
    if n < 2:
        return {**out, "n": n}
    sd = float(np.std(differences, ddof=1))
    if sd == 0:
        statistic = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        p_value = 1.0 if mean == 0 else 0.0
        return {**out, "ci95": [mean, mean], "t": statistic, "p_value": p_value, "n": n}
    error = sd / math.sqrt(n)
    half = float(t.ppf(0.975, n - 1)) * error
    statistic = mean / error
    return {
        "mean_difference": mean,
        "ci95": [mean - half, mean + half],
        "t": statistic,
        "p_value": float(2 * t.sf(abs(statistic), n - 1)),
        "n": n,
    }
