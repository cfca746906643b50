"""Per-class metrics: a metric may return one value per class; metrics.json records each
as ``metric[class]`` with their mean as ``metric``, and the summary shows them per class."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from conftest import tiny_raw
from rich.console import Console

from mtlkit import MulticlassHead, MulticlassOptions, RunResult, load_config, split_metric_name
from mtlkit.evaluation.documents import aggregate
from mtlkit.evaluation.metrics import class_metric_name, metric_values, task_metrics
from mtlkit.plugins.html_report.render import class_metrics_table
from mtlkit.plugins.reports import (
    MarkdownOptions,
    SummaryOptions,
    markdown_report,
    metric_names,
    summary_report,
)
from mtlkit.testing import check_metric

CLASSES = ["small", "medium", "large"]


def per_class_hits(y_true, y_prob, threshold):
    """Share of each class's samples predicted as that class (NaN for an absent class)."""
    predicted = y_prob.argmax(axis=1)
    return [
        float(np.mean(predicted[y_true == c] == c)) if np.any(y_true == c) else math.nan
        for c in range(y_prob.shape[1])
    ]


def test_metric_values_records_each_class_and_their_mean():
    values = metric_values("hits", [0.5, math.nan, 1.0], CLASSES)
    assert values["hits"] == pytest.approx(0.75)  # the undefined class left out
    assert values[class_metric_name("hits", "small")] == 0.5
    assert math.isnan(values["hits[medium]"]) and values["hits[large]"] == 1.0
    assert metric_values("auc", np.float32(0.25), CLASSES) == {"auc": 0.25}


@pytest.mark.parametrize("value", [[0.1, 0.2], [[0.1, 0.2, 0.3]], "abc"])
def test_metric_values_refuses_values_that_do_not_fit_the_classes(value):
    with pytest.raises((TypeError, ValueError)):
        metric_values("hits", value, CLASSES)


def test_split_metric_name_reads_back_what_class_metric_name_writes():
    assert split_metric_name(class_metric_name("auc", "HER2-enriched")) == ("auc", "HER2-enriched")
    assert split_metric_name("auc") == ("auc", None)
    assert split_metric_name("[x]") == ("[x]", None) and split_metric_name("a[]") == ("a[]", None)


def test_task_metrics_of_a_multiclass_head():
    head = MulticlassHead(MulticlassOptions(name="size", label="size", classes=CLASSES))
    targets = np.array([0, 0, 1, 2, np.nan])
    probabilities = np.eye(3)[[0, 1, 1, 0, 2]]
    row = task_metrics(head, targets, probabilities, {"hits": per_class_hits}, 0.5)
    assert row["n"] == 4
    assert (row["hits[small]"], row["hits[medium]"], row["hits[large]"]) == (0.5, 1.0, 0.0)
    assert row["hits"] == pytest.approx(0.5)


def test_the_conformance_kit_accepts_per_class_metrics_and_refuses_wrong_lengths():
    check_metric(_binary_or_per_class)

    def two_values(y_true, y_prob, threshold):
        return [0.5, 0.5]

    with pytest.raises(AssertionError, match="one float per class"):
        check_metric(two_values)


def _binary_or_per_class(y_true, y_prob, threshold):
    if y_prob.ndim == 1:
        return float(np.mean((y_prob > threshold) == y_true))
    return per_class_hits(y_true, y_prob, threshold)


def _document(value: float) -> dict:
    tasks = {
        "bm": {"n": 10, "n_positive": 4, "auc": 0.8},
        "size": {"n": 6, "auc": value, "auc[small]": value, "auc[large]": 0.5},
    }
    return {"sets": {"test": {"n_images": 10, "n_patients": 5, "tasks": tasks}}}


def test_summary_shows_per_class_values_in_a_table_of_their_own(tmp_path):
    console = Console(file=io.StringIO(), width=120, color_system=None)
    summary_report(SummaryOptions())(RunResult(tmp_path, _document(0.75)), console)
    text = console.file.getvalue()
    assert "per class" in text and "small" in text and "large" in text
    main_table = text.split("per class")[0]
    assert "auc[small]" not in main_table  # not a column of the main table
    assert metric_names(_document(0.75)["sets"]["test"]["tasks"]) == ["auc"]


def test_per_class_values_are_summarised_over_runs_like_any_number():
    config = load_config(tiny_raw())
    summary = aggregate(config, {"seed_0": _document(0.7), "seed_1": _document(0.9)})
    row = summary["sets"]["test"]["tasks"]["size"]["auc[small]"]
    assert row["mean"] == pytest.approx(0.8) and row["values"] == [0.7, 0.9]


def test_report_md_has_the_per_class_table(tmp_path):
    markdown_report(MarkdownOptions())(RunResult(tmp_path, _document(0.75)), Console())
    text = (tmp_path / "report.md").read_text()
    assert "Per class (one-vs-rest):" in text
    assert "| size | small | 0.750 |" in text and "| size | large | 0.500 |" in text


def test_report_html_has_the_per_class_table():
    tasks = _document(0.75)["sets"]["test"]["tasks"]
    html = class_metrics_table(tasks)
    assert "Per class" in html and ">small<" in html and ">0.750<" in html
    assert class_metrics_table({"bm": tasks["bm"]}) == ""
