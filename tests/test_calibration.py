"""Calibration (Brier score, ECE, reliability bins) and the Youden threshold on cases worked
by hand and against sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_curve

from mtlkit import calibration
from mtlkit.evaluation.calibration import bin_index, expected_calibration_error, reliability
from mtlkit.evaluation.thresholds import youden_threshold


def test_brier_and_ece_worked_by_hand():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.05, 0.05, 0.95, 0.95])
    result = calibration(y, p)
    # bin 0: mean 0.05, observed 1/2 (2 images); bin 9: mean 0.95, observed 1 (2 images)
    assert result["ece"] == pytest.approx((2 * 0.45 + 2 * 0.05) / 4)
    assert result["brier"] == pytest.approx(brier_score_loss(y, p))
    assert [b["n"] for b in result["bins"]] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    first, empty = result["bins"][0], result["bins"][1]
    assert first == {"range": [0.0, 0.1], "n": 2, "mean_predicted": 0.05, "observed": 0.5}
    assert math.isnan(empty["mean_predicted"]) and math.isnan(empty["observed"])


def test_bins_are_half_open_and_the_top_bin_holds_one():
    edges = np.array([0.0, 0.1, 0.3, 0.7, 0.99999, 1.0])
    assert bin_index(edges, 10).tolist() == [0, 1, 3, 7, 9, 9]
    assert bin_index(edges, 4).tolist() == [0, 0, 1, 2, 3, 3]
    with pytest.raises(ValueError):
        bin_index(edges, 0)


def test_calibrated_probabilities_have_a_small_ece_and_overconfident_ones_a_large():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)  # outcomes drawn with the stated probability
    assert expected_calibration_error(y, p) < 0.02
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(y, overconfident) > 0.2
    rows = reliability(y, p, bins=5)
    assert [r["range"] for r in rows][-1] == [0.8, 1.0]
    assert sum(r["n"] for r in rows) == 20000
    for row in rows:
        assert row["observed"] == pytest.approx(row["mean_predicted"], abs=0.03)


def test_calibration_of_no_images_is_nan():
    result = calibration(np.array([]), np.array([]))
    assert math.isnan(result["brier"]) and math.isnan(result["ece"])


def test_youden_threshold_worked_by_hand():
    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    # p > 0.25: SE 1, SP 2/3 (J 2/3); p > 0.65: SE 2/3, SP 1 (J 2/3): the lower wins
    assert youden_threshold(y, p) == pytest.approx(0.25)
    assert youden_threshold(y, np.array([0.1, 0.2, 0.3, 0.25, 0.7, 0.8])) == pytest.approx(0.275)


def test_youden_threshold_reaches_the_best_j_of_the_roc_curve():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 80)
        p = np.round(rng.random(80) * 0.6 + 0.3 * y, 2)
        cut = youden_threshold(y, p)
        predicted = p > cut
        j = predicted[y == 1].mean() + (~predicted[y == 0]).mean() - 1
        fpr, tpr, _ = roc_curve(y, p)
        assert j == pytest.approx(np.max(tpr - fpr), abs=1e-12)
        assert not np.isin(cut, p)  # between two observed probabilities


def test_youden_threshold_is_nan_when_undefined():
    assert math.isnan(youden_threshold(np.ones(4), np.linspace(0, 1, 4)))
    assert math.isnan(youden_threshold(np.array([0, 1, 0]), np.full(3, 0.4)))
