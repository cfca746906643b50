"""The stratified (cluster) bootstrap: what a resample keeps, reproducibility, agreement of
the vectorised AUC with a per-resample computation, paired p-values on cases with a known
answer, and coverage of the AUC's true value on simulated scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from mtlkit import bootstrap_ci, delong_ci, paired_bootstrap
from mtlkit.evaluation.bootstrap import resample_weights


def scores(seed: int = 0, size: int = 120, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    y = (rng.random(size) < 0.4).astype(int)
    return y, np.round(rng.normal(shift * y, 1.0), 2)


def test_image_resamples_keep_the_number_of_positives_and_negatives():
    y, _ = scores()
    for weights in resample_weights(y, None, 50, np.random.default_rng(0)):
        assert (weights[:, y == 1].sum(axis=1) == y.sum()).all()
        assert (weights[:, y == 0].sum(axis=1) == (y == 0).sum()).all()


def test_cluster_resamples_draw_whole_patients_within_their_stratum():
    y = np.array([1, 0, 0, 0, 0, 1, 0, 0])
    patients = ["a", "a", "b", "b", "c", "d", "e", "e"]  # a and d hold a positive image
    for weights in resample_weights(y, patients, 200, np.random.default_rng(1)):
        assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 2] == weights[:, 3]).all()
        assert (weights[:, 0] + weights[:, 5] == 2).all()  # two positive patients drawn
        assert (weights[:, 2] + weights[:, 4] + weights[:, 6] == 3).all()
        assert (weights[:, 6] == weights[:, 7]).all()


def test_the_interval_is_reproducible_and_depends_on_the_seed():
    y, p = scores()
    first = bootstrap_ci(y, p, resamples=500, seed=3)
    assert first == bootstrap_ci(y, p, resamples=500, seed=3)
    assert first != bootstrap_ci(y, p, resamples=500, seed=4)
    assert first.low < first.estimate < first.high and first.valid == 500
    assert first.estimate == pytest.approx(roc_auc_score(y, p))


def test_the_vectorised_auc_equals_the_auc_of_each_resample():
    y, p = scores(size=60)
    patients = np.arange(60) // 3
    fast = bootstrap_ci(y, p, "auc", patients, resamples=200, seed=0)
    slow = bootstrap_ci(y, p, roc_auc_score, patients, resamples=200, seed=0)
    assert fast.low == pytest.approx(slow.low, abs=1e-12)
    assert fast.high == pytest.approx(slow.high, abs=1e-12)


def test_a_degenerate_split_gives_nan_and_resamples_without_a_value_are_left_out():
    nan = bootstrap_ci(np.ones(10), np.linspace(0, 1, 10), resamples=100)
    assert math.isnan(nan.estimate) and math.isnan(nan.low) and nan.valid == 0

    def sensitivity_when_defined(y, p):  # NaN on purpose for about half the resamples
        return np.mean(p[y == 1] > 0.5) if p.max() > 0.9 else math.nan

    y, p = scores(size=40)
    p = np.clip(p / 4 + 0.4, 0, 0.95)
    result = bootstrap_ci(y, p, sensitivity_when_defined, resamples=300, seed=0)
    assert 0 < result.valid < 300 and result.low <= result.high


def test_paired_bootstrap_of_identical_models_gives_p_one():
    y, p = scores()
    result = paired_bootstrap(y, p, p, clusters=np.arange(len(y)) // 2, resamples=300)
    assert result["difference"] == 0 and result["ci"] == [0.0, 0.0]
    assert result["p_value"] == 1.0 and result["valid"] == 300


def test_paired_bootstrap_p_value_has_the_plus_one_floor_and_is_symmetric():
    y, p = scores(size=200, shift=3.0)  # an excellent model ...
    noise = np.random.default_rng(9).random(200)  # ... against a useless one
    better = paired_bootstrap(y, p, noise, resamples=499, seed=1)
    assert better["difference"] > 0.3 and better["ci"][0] > 0
    assert better["p_value"] == 2 / 500  # no resample on the other side of 0
    worse = paired_bootstrap(y, noise, p, resamples=499, seed=1)
    assert worse["p_value"] == better["p_value"]
    assert worse["ci"] == pytest.approx([-better["ci"][1], -better["ci"][0]], abs=1e-12)


def test_paired_bootstrap_of_a_thresholded_metric():
    def accuracy(y, p):
        return float(np.mean((p > 0.5) == (y == 1)))

    y, p = scores(seed=2)
    shifted = p + 0.3  # moves the cut-off: another accuracy on the same images
    result = paired_bootstrap(y, p, shifted, accuracy, resamples=300, seed=0)
    assert result["estimate1"] == pytest.approx(accuracy(y, p))
    assert result["ci"][0] <= result["difference"] <= result["ci"][1]
    assert 0 < result["p_value"] <= 1


def binormal(rng, positives: int, negatives: int, separation: float):
    y = np.r_[np.ones(positives, int), np.zeros(negatives, int)]
    return y, np.r_[rng.normal(separation, 1, positives), rng.normal(0, 1, negatives)]


def coverage(repetitions: int, resamples: int, seed: int = 0) -> tuple[float, float]:
    """Shares of bootstrap and DeLong 95% intervals that hold the true AUC of a binormal
    model (positives N(1, 1), negatives N(0, 1): AUC = Phi(1 / sqrt 2) = 0.760)."""
    rng = np.random.default_rng(seed)
    truth = norm.cdf(1 / math.sqrt(2))
    hits = [0, 0]
    for r in range(repetitions):
        y, p = binormal(rng, 40, 60, 1.0)
        boot = bootstrap_ci(y, p, resamples=resamples, seed=r)
        delong = delong_ci(y, p)
        hits[0] += boot.low <= truth <= boot.high
        hits[1] += delong.low <= truth <= delong.high
    return hits[0] / repetitions, hits[1] / repetitions


def test_bootstrap_and_delong_intervals_cover_the_true_auc():
    # 300 simulated sets: a share's standard error is about 0.013 at 0.95
    boot, delong = coverage(300, 400)
    assert 0.90 <= boot <= 0.99
    assert 0.90 <= delong <= 0.99


def test_the_cluster_bootstrap_covers_where_the_image_bootstrap_does_not():
    """Patients of 4 images sharing a random effect: the images are far from independent.
    The image-level interval is too narrow; the patient-level one keeps its coverage."""
    rng = np.random.default_rng(0)
    truth = norm.cdf(1 / math.sqrt(2 * (0.8 + 0.2)))  # AUC of images of different patients
    hits = {"patient": 0, "image": 0}
    repetitions = 200
    for r in range(repetitions):
        sick = np.r_[np.ones(15, int), np.zeros(25, int)]  # per patient
        effect = rng.normal(sick * 1.0, math.sqrt(0.8))
        y = np.repeat(sick, 4)
        patients = np.repeat(np.arange(40), 4)
        p = effect[patients] + rng.normal(0, math.sqrt(0.2), len(y))
        for unit, clusters in (("patient", patients), ("image", None)):
            result = bootstrap_ci(y, p, clusters=clusters, resamples=300, seed=r)
            hits[unit] += result.low <= truth <= result.high
    assert hits["patient"] / repetitions >= 0.88
    assert hits["image"] / repetitions <= 0.85
