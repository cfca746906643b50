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
