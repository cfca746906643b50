"""Coverage of the AUC intervals on simulated scores with a known AUC, and the bootstrap's
cost: the figures behind evaluation.statistics' defaults.

    python benchmarks/bootstrap_coverage.py [--sets 1000] [--resamples 2000]

1. Binormal scores (40 positives N(1, 1), 60 negatives N(0, 1): AUC = Phi(1/sqrt 2) =
   0.760): the share of 95% intervals, stratified bootstrap and DeLong, that hold it.
2. Clustered images (40 patients of 4 images each, 15 with the disease, a patient effect
   that makes the images correlate at 0.8): the patient (cluster) bootstrap against the
   image bootstrap, which treats the images as independent.
3. Seconds for 2,000 resamples of 800 images of 400 patients.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.stats import norm

from mtlkit import bootstrap_ci, delong_ci


def binormal_coverage(sets: int, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    truth = norm.cdf(1 / math.sqrt(2))
    hits = [0, 0]
    for r in range(sets):
        y = np.r_[np.ones(40, int), np.zeros(60, int)]
        p = rng.normal(y.astype(float), 1.0)
        boot, delong = bootstrap_ci(y, p, resamples=resamples, seed=r), delong_ci(y, p)
        hits[0] += boot.low <= truth <= boot.high
        hits[1] += delong.low <= truth <= delong.high
    return hits[0] / sets, hits[1] / sets


def clustered_coverage(sets: int, resamples: int, rng: np.random.Generator) -> dict[str, float]:
    # patient effect N(d, 0.8) plus image noise N(0, 0.2): the images of a patient correlate
    # at 0.8, and the patient-level AUC is Phi(1 / sqrt 2) as above
    truth = norm.cdf(1 / math.sqrt(2))
    hits = {"patient": 0, "image": 0}
    for r in range(sets):
        sick = np.r_[np.ones(15, int), np.zeros(25, int)]
        effect = rng.normal(sick * 1.0, math.sqrt(0.8))
        patients = np.repeat(np.arange(40), 4)
        y = np.repeat(sick, 4)
        p = effect[patients] + rng.normal(0, math.sqrt(0.2), len(y))
        for unit, clusters in (("patient", patients), ("image", None)):
            interval = bootstrap_ci(y, p, clusters=clusters, resamples=resamples, seed=r)
            hits[unit] += interval.low <= truth <= interval.high
    return {unit: count / sets for unit, count in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    boot, delong = binormal_coverage(args.sets, args.resamples, rng)
    print(f"binormal, {args.sets} sets: bootstrap {boot:.3f}, DeLong {delong:.3f}")
    shares = clustered_coverage(args.sets, args.resamples, rng)
    print(
        f"clustered, {args.sets} sets: patient {shares['patient']:.3f}, image {shares['image']:.3f}"
    )
    y = (np.random.default_rng(0).random(800) < 0.3).astype(int)
    p = np.random.default_rng(1).random(800) + 0.3 * y
    started = time.perf_counter()
    bootstrap_ci(y, p, clusters=np.arange(800) // 2, resamples=2000)
    print(f"800 images of 400 patients, 2000 resamples: {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
