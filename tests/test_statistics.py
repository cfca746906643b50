"""Summaries of repeated runs and the paired t-test against scipy and known numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ttest_rel

from mtlkit import paired_t_test
from mtlkit.evaluation.statistics import summarize


def test_the_t_intervals_of_known_numbers():
    result = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    # SD = sqrt(2.5) = 1.5811; t(0.975, 4) = 2.7764451
    assert result["mean"] == 3.0 and result["sd"] == pytest.approx(1.5811388)
    assert result["ci95"] == pytest.approx([3 - 4.3899452, 3 + 4.3899452])
    assert result["ci95_mean"] == pytest.approx([3 - 1.9632432, 3 + 1.9632432])


def test_paired_t_test_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(10):
        a = rng.normal(0.8, 0.03, 5)
        b = a - rng.normal(0.01, 0.02, 5)
        result = paired_t_test(list(a), list(b))
        expected = ttest_rel(a, b)
        assert result["t"] == pytest.approx(expected.statistic, rel=1e-10)
        assert result["p_value"] == pytest.approx(expected.pvalue, rel=1e-10)
        assert result["n"] == 5
        low, high = result["ci95"]
        assert low < result["mean_difference"] < high


def test_paired_t_test_on_cases_with_a_known_answer():
    same = paired_t_test([0.8, 0.7, 0.9], [0.8, 0.7, 0.9])
    assert same["p_value"] == 1.0 and same["t"] == 0.0 and same["mean_difference"] == 0.0
    shifted = paired_t_test([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])  # differences all 1: no doubt
    assert shifted["p_value"] == 0.0 and shifted["t"] == math.inf
    nan = float("nan")
    left_out = paired_t_test([0.8, nan, 0.7, 0.75], [0.7, 0.6, None, 0.7])
    assert left_out["n"] == 2
    one = paired_t_test([0.8, nan], [0.7, 0.5])
    assert one["n"] == 1 and math.isnan(one["p_value"]) and math.isnan(one["t"])
    with pytest.raises(ValueError):
        paired_t_test([0.8], [0.7, 0.6])
