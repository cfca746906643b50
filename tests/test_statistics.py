"""Summaries of repeated runs and the paired t-test against scipy and known numbers; the
statistics of each binary task in metrics.json (intervals, calibration, Youden)."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from conftest import METRICS, TASKS, tiny_raw
from rich.console import Console
from scipy.stats import ttest_rel

import mtlkit
import mtlkit.plugins.metrics as M
from mtlkit import (
    EvalResult,
    Predictions,
    TaskHead,
    bootstrap_ci,
    delong_ci,
    load_config,
    paired_t_test,
)
from mtlkit.config.schema import StatisticsConfig
from mtlkit.evaluation.documents import aggregate
from mtlkit.evaluation.split_statistics import add_statistics, add_youden
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


# --- in metrics.json ---------------------------------------------------------------------


class _Multiclass(TaskHead):
    kind = "multiclass"


def _result(split: str, targets: dict, probabilities: dict) -> EvalResult:
    size = len(next(iter(targets.values())))
    predictions = Predictions(
        split, [str(i) for i in range(size)], ["p"] * size, targets, probabilities
    )
    return EvalResult(split, size, 1, {t: {} for t in targets}, {}, predictions)


def test_binary_tasks_get_intervals_and_calibration_and_multiclass_none():
    rng = np.random.default_rng(0)
    y = (rng.random(60) < 0.5).astype(float)
    y[:3] = np.nan  # unlabelled: left out
    p = np.clip(rng.normal(0.3 + 0.4 * np.nan_to_num(y), 0.2), 0, 1)
    heads = [TaskHead("bm"), _Multiclass("birads", classes=["2", "3", "4"])]
    tasks = {"bm": {"auc": 0.0}, "birads": {"auc": 0.0}}
    groups = [f"patient{i // 2}" for i in range(60)]
    options = StatisticsConfig(bootstrap_resamples=300, seed=5, calibration_bins=5)
    targets = {"bm": y, "birads": rng.integers(0, 3, 60).astype(float)}
    probabilities = {"bm": p, "birads": rng.dirichlet(np.ones(3), 60)}
    blocks = add_statistics(tasks, heads, targets, probabilities, groups, options)
    assert set(tasks["birads"]) == {"auc"}
    row = tasks["bm"]
    known = ~np.isnan(y)
    expected = delong_ci(y[known], p[known])
    assert row["auc_ci_delong"] == [expected.low, expected.high]
    boot = bootstrap_ci(y[known], p[known], "auc", np.array(groups)[known], 300, 5)
    assert row["auc_ci_bootstrap"] == [boot.low, boot.high]
    assert row["brier"] == pytest.approx(np.mean((p[known] - y[known]) ** 2))
    assert set(blocks["calibration"]) == {"bm"} and len(blocks["calibration"]["bm"]) == 5
    assert sum(b["n"] for b in blocks["calibration"]["bm"]) == known.sum()
    bootstrap = blocks["statistics"]["auc_ci_bootstrap"]
    assert (
        bootstrap["unit"] == "patient" and bootstrap["resamples"] == 300 and bootstrap["seed"] == 5
    )
    assert blocks["statistics"]["calibration_bins"] == 5 and blocks["statistics"]["level"] == 0.95

    image = StatisticsConfig(bootstrap_resamples=300, seed=5, bootstrap_unit="image")
    add_statistics(tasks, heads, targets, probabilities, groups, image)
    by_image = bootstrap_ci(y[known], p[known], "auc", None, 300, 5)
    assert tasks["bm"]["auc_ci_bootstrap"] == [by_image.low, by_image.high]
    off = add_statistics(
        tasks, heads, targets, probabilities, groups, StatisticsConfig(bootstrap_resamples=0)
    )
    assert off["statistics"]["auc_ci_bootstrap"] is None
    assert add_statistics({"birads": {}}, heads[1:], targets, probabilities, groups, options) == {}


def test_the_youden_threshold_of_val_is_applied_unchanged_to_test():
    val = _result(
        "val",
        {"bm": np.array([0, 0, 1, 0, 1, 1.0])},
        {"bm": np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])},
    )
    test = _result(
        "test", {"bm": np.array([0, 1, 1, np.nan])}, {"bm": np.array([0.2, 0.26, 0.9, 0.1])}
    )
    metrics = {"se": M.sensitivity, "sp": M.specificity, "auc": M.auc}
    add_youden({"val": val, "test": test}, [TaskHead("bm")], metrics)
    assert val.extra["at_youden"]["bm"] == {
        "threshold": pytest.approx(0.25),
        "se": 1.0,
        "sp": pytest.approx(2 / 3),
    }
    assert test.extra["at_youden"]["bm"] == {"threshold": pytest.approx(0.25), "se": 1.0, "sp": 1.0}
    assert "at_youden" in test.as_dict()
    alone = _result("test", {"bm": np.array([0, 1.0])}, {"bm": np.array([0.2, 0.9])})
    add_youden({"test": alone}, [TaskHead("bm")], metrics)  # no validation split: nothing
    assert alone.extra == {}


def test_a_run_records_the_statistics_in_metrics_json(tmp_path):
    raw = tiny_raw(reports=["summary", "markdown"])
    raw["training"]["epochs"] = 1
    raw["evaluation"]["statistics"] = {"youden": True, "bootstrap_resamples": 500}
    out = tmp_path / "run"
    console = Console(file=io.StringIO(), width=100)
    mtlkit.run(load_config(raw), out_dir=out, console=console)
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["sets"]["test"]
    with open(out / "predictions.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    for task in TASKS:
        row = test["tasks"][task]
        assert set(METRICS) <= set(row)  # the flat metrics stay as they were
        for name in ("auc_ci_delong", "auc_ci_bootstrap"):
            low, high = row[name]
            assert 0 <= low <= row["auc"] <= high <= 1, (task, name)
        assert 0 <= row["brier"] <= 1 and 0 <= row["ece"] <= 1
        labelled = [r for r in rows if r[f"{task}_label"] != ""]
        y = np.array([int(r[f"{task}_label"]) for r in labelled])
        p = np.array([float(r[f"{task}_prob"]) for r in labelled])
        assert row["auc_ci_delong"] == pytest.approx(list(delong_ci(y, p)[1:3]), abs=1e-4)
        assert len(test["calibration"][task]) == 10
        assert set(test["at_youden"][task]) == {"threshold", "acc", "se", "sp", "precision", "f1"}
        assert (
            test["at_youden"][task]["threshold"]
            == metrics["sets"]["val"]["at_youden"][task]["threshold"]
        )
    assert test["statistics"]["auc_ci_bootstrap"]["unit"] == "patient"
    assert test["statistics"]["auc_ci_bootstrap"]["resamples"] == 500
    report = console.file.getvalue()
    assert "ECE" in report and "[0." not in report  # intervals are not table columns
    assert "statistics" in (out / "config.yaml").read_text()  # not the defaults: recorded


def test_repeated_runs_summarise_brier_ece_and_youden_and_keep_intervals_per_run():
    def document(shift: float) -> dict:
        tasks = {
            "bm": {
                "n": 10,
                "n_positive": 4,
                "auc": 0.8 + shift,
                "auc_ci_delong": [0.6, 0.9],
                "brier": 0.2 + shift,
                "ece": 0.1,
            }
        }
        youden = {"bm": {"threshold": 0.4 + shift, "se": 0.75}}
        statistics = {"level": 0.95}
        return {
            "sets": {
                "test": {
                    "n_images": 10,
                    "n_patients": 5,
                    "tasks": tasks,
                    "consistency": {},
                    "statistics": statistics,
                    "at_youden": youden,
                    "calibration": {"bm": []},
                }
            }
        }

    config = load_config(tiny_raw(seed=[0, 1]))
    summary = aggregate(config, {"seed_0": document(0.0), "seed_1": document(0.1)})
    test = summary["sets"]["test"]
    assert set(test["tasks"]["bm"]) == {"n", "auc", "brier", "ece"}
    assert test["tasks"]["bm"]["brier"]["values"] == [0.2, pytest.approx(0.3)]
    assert test["at_youden"]["bm"]["threshold"]["mean"] == pytest.approx(0.45)
    assert test["statistics"] == {"level": 0.95} and "calibration" not in test
    assert summary["runs"]["seed_0"]["sets"]["test"]["tasks"]["bm"]["auc_ci_delong"] == [0.6, 0.9]
