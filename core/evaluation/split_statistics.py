"""The statistics of diagnostic accuracy that metrics.json records for every binary task of
an evaluated set: the AUC's DeLong and bootstrap intervals, the Brier score, the ECE and
the reliability bins, and (``evaluation.statistics.youden``) the metrics at the Youden
threshold of the validation split. Composed from :mod:`~mtlkit.evaluation.auc`,
:mod:`~mtlkit.evaluation.bootstrap`, :mod:`~mtlkit.evaluation.calibration` and
:mod:`~mtlkit.evaluation.thresholds`; multiclass tasks get none of it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mtlkit.components.interfaces import MetricFn, TaskHead
from mtlkit.config.schema import StatisticsConfig
from mtlkit.evaluation.auc import delong_ci
from mtlkit.evaluation.bootstrap import bootstrap_ci
from mtlkit.evaluation.calibration import calibration
from mtlkit.evaluation.thresholds import youden_threshold
from mtlkit.results import EvalResult

THRESHOLD_FREE = ("auc",)  # metrics left out at the Youden threshold: they would not change


def add_statistics(
    tasks: Mapping[str, dict[str, Any]],
    heads: Sequence[TaskHead],
    targets: Mapping[str, np.ndarray],
    probabilities: Mapping[str, np.ndarray],
    groups: Sequence[str],
    options: StatisticsConfig,
) -> dict[str, Any]:
    """Add ``auc_ci_delong``, ``auc_ci_bootstrap`` (``[low, high]``), ``brier`` and ``ece``
    to each binary task's metrics in ``tasks``, over the images whose target is known;
    ``groups`` is each image's patient (joined with the patients it shares near-duplicate
    images with), the unit of the patient bootstrap.

    Returns the set-level blocks: ``statistics`` (how the numbers were computed: level,
    bootstrap unit, resamples and seed, calibration bins) and ``calibration`` (each
    task's reliability bins)."""
    bootstrap = options.bootstrap_resamples > 0
    reliability: dict[str, list[dict[str, Any]]] = {}
    for head in heads:
        if head.kind != "binary":
            continue
        known = ~np.isnan(targets[head.name])
        y = targets[head.name][known].astype(np.int64)
        p = np.asarray(probabilities[head.name], dtype=np.float64)[known]
        row = tasks[head.name]
        delong = delong_ci(y, p, options.level)
        row["auc_ci_delong"] = [delong.low, delong.high]
        if bootstrap:
            clusters = (
                [g for g, k in zip(groups, known, strict=True) if k]
                if options.bootstrap_unit == "patient"
                else None
            )
            interval = bootstrap_ci(
                y, p, "auc", clusters, options.bootstrap_resamples, options.seed, options.level
            )
            row["auc_ci_bootstrap"] = [interval.low, interval.high]
        scores = calibration(y, p, options.calibration_bins)
        row["brier"], row["ece"] = scores["brier"], scores["ece"]
        reliability[head.name] = scores["bins"]
    if not reliability:
        return {}
    return {
        "statistics": {
            "level": options.level,
            "auc_ci_delong": "AUC +- z x SD by DeLong's variance, clipped to [0, 1]",
            "auc_ci_bootstrap": {
                "interval": "percentile",
                "unit": options.bootstrap_unit,
                "stratified": "patients with and without a positive image"
                if options.bootstrap_unit == "patient"
                else "positive and negative images",
                "resamples": options.bootstrap_resamples,
                "seed": options.seed,
            }
            if bootstrap
            else None,
            "calibration_bins": options.calibration_bins,
        },
        "calibration": reliability,
    }


def add_youden(
    evals: Mapping[str, EvalResult], heads: Sequence[TaskHead], metrics: Mapping[str, MetricFn]
) -> None:
    """Each binary task's Youden threshold on the ``val`` result, applied unchanged to every
    set but ``train``: ``at_youden`` = ``{task: {"threshold": t, metric: value, ...}}``
    beside its metrics (the threshold-free AUC left out). Nothing without a validation
    split."""
    if "val" not in evals:
        return
    val = evals["val"].predictions
    binary = [h for h in heads if h.kind == "binary"]
    thresholds = {}
    for head in binary:
        y, p = _known(val.targets[head.name], val.probabilities[head.name])
        thresholds[head.name] = youden_threshold(y, p)
    for name, result in evals.items():
        if name == "train" or not binary:
            continue
        block = {}
        for head in binary:
            y, p = _known(
                result.predictions.targets[head.name], result.predictions.probabilities[head.name]
            )
            threshold = thresholds[head.name]
            defined = len(y) > 0 and not math.isnan(threshold)
            row: dict[str, Any] = {"threshold": threshold}
            for metric, fn in metrics.items():
                if metric not in THRESHOLD_FREE:
                    row[metric] = float(fn(y, p, threshold)) if defined else math.nan
            block[head.name] = row
        result.extra["at_youden"] = block


def _known(targets: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known = ~np.isnan(targets)
    return targets[known].astype(np.int64), np.asarray(probabilities)[known]
