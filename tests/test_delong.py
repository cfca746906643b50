"""The AUC and DeLong's method against independent computations: brute-force structural
components over every (positive, negative) pair, sklearn's AUC and a second DeLong
implementation (the ``confidenceinterval`` package, a test-only dependency)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from confidenceinterval.delong import calc_pvalue, delong_roc_variance, fastDeLong
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from mtlkit import delong_ci, paired_delong
from mtlkit.evaluation.auc import binary_auc, structural_components, weighted_aucs


def psi(x: float, y: float) -> float:
    """DeLong's kernel: 1 when the positive outscores the negative, 1/2 for a tie."""
    return 1.0 if x > y else 0.5 if x == y else 0.0


def brute_force(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and DeLong's covariance from the definition (DeLong et al. 1988, eq. 4-5),
    with explicit loops over every pair and textbook sample covariances."""
    pos = [i for i in range(len(y)) if y[i] == 1]
    neg = [j for j in range(len(y)) if y[j] == 0]
    m, n = len(pos), len(neg)
    v10 = [[sum(psi(s[i], s[j]) for j in neg) / n for i in pos] for s in scores]
    v01 = [[sum(psi(s[i], s[j]) for i in pos) / m for j in neg] for s in scores]
    aucs = np.array([sum(v) / m for v in v10])
    k = len(scores)
    cov = np.zeros((k, k))
    for r in range(k):
        for c in range(k):
            s10 = sum((v10[r][i] - aucs[r]) * (v10[c][i] - aucs[c]) for i in range(m)) / (m - 1)
            s01 = sum((v01[r][j] - aucs[r]) * (v01[c][j] - aucs[c]) for j in range(n)) / (n - 1)
            cov[r, c] = s10 / m + s01 / n
    return aucs, cov


HAND_MADE = [
    # (labels, scores): small sets with ties within and across the classes
    ([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]),
    ([1, 0, 1, 0, 1, 0, 0], [0.8, 0.8, 0.5, 0.5, 0.5, 0.2, 0.9]),
    ([0, 0, 1, 1, 1, 0, 1, 0], [0.3, 0.3, 0.3, 0.7, 0.7, 0.1, 0.2, 0.7]),
    ([1, 1, 1, 0, 0], [0.2, 0.2, 0.2, 0.2, 0.2]),  # every score tied: AUC 1/2, variance 0
]


def test_the_structural_components_of_a_set_worked_by_hand():
    # positives 0.9 (beats both negatives) and 0.4 (beats 0.1): V10 = 1, 1/2;
    # negatives 0.6 (below one positive of two) and 0.1 (below both): V01 = 1/2, 1
    v10, v01 = structural_components(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1]))
    assert v10.tolist() == [1.0, 0.5] and v01.tolist() == [0.5, 1.0]
    auc, low, high, variance = delong_ci(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1]))
    assert auc == 0.75
    assert variance == pytest.approx(0.125 / 2 + 0.125 / 2)  # S10 / m + S01 / n
    assert low == pytest.approx(0.75 - norm.ppf(0.975) * math.sqrt(0.125))
    assert high == 1.0  # clipped


@pytest.mark.parametrize(("labels", "scores"), HAND_MADE)
def test_delong_variance_matches_the_brute_force_definition(labels, scores):
    y, p = np.array(labels), np.array(scores)
    aucs, cov = brute_force(y, [p])
    auc, _, _, variance = delong_ci(y, p)
    assert auc == pytest.approx(aucs[0], abs=1e-12)
    assert variance == pytest.approx(cov[0, 0], abs=1e-12)
    assert binary_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def random_sets(count: int, seed: int = 0):
    """Sets of 5 to 200 images, both classes twice or more, scores rounded to make ties."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        size = int(rng.integers(5, 200))
        y = rng.integers(0, 2, size)
        y[:4] = [0, 1, 0, 1]  # two of each class: a variance
        p = np.round(rng.normal(0.8 * y, 1.0), int(rng.integers(1, 3)))
        yield y, p


def test_delong_agrees_with_a_second_implementation():
    worst = 0.0
    for y, p in random_sets(50):
        auc, _, _, variance = delong_ci(y, p)
        their_auc, their_variance = delong_roc_variance(y, p)
        assert auc == pytest.approx(their_auc, abs=1e-6)  # theirs: float32 midranks
        worst = max(worst, abs(variance - float(their_variance)) / variance)
    assert worst < 1e-5


def test_delong_interval_is_clipped_and_nan_when_undefined():
    y = np.array([0, 0, 0, 1, 1, 1])
    assert tuple(delong_ci(y, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]))) == (1.0, 1.0, 1.0, 0.0)
    _, low, high, _ = delong_ci(y, np.array([0.1, 0.2, 0.75, 0.7, 0.8, 0.9]))
    assert 0 < low < high == 1.0
    assert all(math.isnan(v) for v in delong_ci(np.ones(4), np.arange(4.0)))  # one class
    auc, low, high, variance = delong_ci(np.array([1, 0, 0]), np.array([0.9, 0.1, 0.2]))
    assert auc == 1.0 and math.isnan(low) and math.isnan(high) and math.isnan(variance)


def test_a_wider_level_gives_a_wider_interval():
    y, p = next(random_sets(1, seed=3))
    narrow, wide = delong_ci(y, p, level=0.8), delong_ci(y, p, level=0.99)
    assert wide.low < narrow.low < narrow.auc < narrow.high < wide.high


def test_paired_delong_of_identical_models_gives_p_one():
    y, p = next(random_sets(1))
    result = paired_delong(y, p, p)
    assert result["difference"] == 0 and result["z"] == 0 and result["p_value"] == 1.0
    # the same ranking from a monotone transform is the same model for the AUC
    assert paired_delong(y, p, np.exp(p))["p_value"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_delong_matches_brute_force_and_a_second_implementation(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    y[:2] = [0, 1]
    p1 = np.round(rng.normal(1.0 * y, 1.0), 1)
    p2 = np.round(0.6 * p1 + rng.normal(0.4 * y, 0.8), 1)  # correlated with the first
    result = paired_delong(y, p1, p2)
    aucs, cov = brute_force(y, [p1, p2])
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = (aucs[0] - aucs[1]) / math.sqrt(variance)
    assert result["auc1"] == pytest.approx(aucs[0], abs=1e-12)
    assert result["auc2"] == pytest.approx(aucs[1], abs=1e-12)
    assert result["variance"] == pytest.approx(variance, abs=1e-12)
    assert result["z"] == pytest.approx(z, rel=1e-9)
    assert result["p_value"] == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)
    # confidenceinterval's fast DeLong on both models (positives first), log10 p-value
    order = np.argsort(1 - y, kind="stable")
    their_aucs, their_cov = fastDeLong(np.stack([p1, p2])[:, order], int(y.sum()), None)
    assert np.allclose(their_aucs, aucs, atol=1e-6)
    assert np.allclose(their_cov, cov, rtol=1e-4, atol=1e-9)
    their_p = 10 ** float(np.ravel(calc_pvalue(their_aucs, their_cov))[0])
    assert result["p_value"] == pytest.approx(their_p, rel=1e-3)


def test_paired_delong_is_nan_without_both_classes():
    result = paired_delong(np.ones(5), np.arange(5.0), np.arange(5.0)[::-1])
    assert all(math.isnan(result[k]) for k in ("difference", "z", "p_value"))


def test_weighted_aucs_are_the_aucs_of_the_resampled_data():
    y, p = next(random_sets(1, seed=5))
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 3, size=(20, len(y)))
    weights[0] = 0  # nothing drawn: undefined
    values = weighted_aucs(y, p, weights)
    assert math.isnan(values[0])
    for row, value in zip(weights[1:], values[1:], strict=True):
        picked = np.repeat(np.arange(len(y)), row)
        assert value == pytest.approx(roc_auc_score(y[picked], p[picked]), abs=1e-12)
