"""Two models compared on one test split: summaries over runs, paired by run, and the
single-run tests from the two models' predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ttest_rel

from mtlkit.evaluation.auc import paired_delong
from mtlkit.evaluation.comparison import (
    compare_documents,
    compare_models,
    comparison_csv,
    prediction_rows,
    predictions_test,
)
from mtlkit.plugins.html_report.comparison import comparison_html
from mtlkit.plugins.metrics import accuracy
from mtlkit.plugins.reports import comparison_markdown
from mtlkit.plugins.run_files import RunFiles, ablation_siblings


def run_document(auc: float, acc: float, share: float) -> dict:
    return {
        "sets": {
            "test": {
                "tasks": {"bm": {"n": 10, "n_positive": 4, "auc": auc, "acc": acc}},
                "consistency": {"alnm_without_bm": share},
            }
        }
    }


def repeated(values: list[tuple[float, float, float]]) -> dict:
    return {"runs": {f"seed_{i}": run_document(*v) for i, v in enumerate(values)}}


REFERENCE = repeated([(0.80, 0.70, 0.10), (0.82, 0.72, 0.12), (0.79, 0.69, 0.08)])
OTHER = repeated([(0.70, 0.60, 0.20), (0.75, 0.66, 0.22), (0.72, 0.61, 0.25)])


def test_repeated_runs_are_compared_by_the_paired_t_test():
    compared = compare_documents(REFERENCE, OTHER, "test")
    row = compared["tasks"]["bm"]["auc"]
    assert row["values"] == [0.70, 0.75, 0.72]
    assert row["mean"] == pytest.approx(np.mean([0.70, 0.75, 0.72]))
    assert row["p_value"] == pytest.approx(ttest_rel([0.70, 0.75, 0.72], [0.80, 0.82, 0.79]).pvalue)
    assert row["test"] == "paired t-test over runs"
    assert "n" not in compared["tasks"]["bm"]
    share = compared["consistency"]["alnm_without_bm"]
    assert share["p_value"] == pytest.approx(
        ttest_rel([0.20, 0.22, 0.25], [0.10, 0.12, 0.08]).pvalue
    )


def test_runs_are_paired_by_label_not_by_position():
    shuffled = {"runs": dict(reversed(list(OTHER["runs"].items())))}
    assert compare_documents(REFERENCE, shuffled, "test")["tasks"]["bm"]["auc"]["p_value"] == (
        pytest.approx(compare_documents(REFERENCE, OTHER, "test")["tasks"]["bm"]["auc"]["p_value"])
    )
    unpaired = {"runs": {"seed_9": run_document(0.7, 0.6, 0.2)}}
    assert math.isnan(
        compare_documents(REFERENCE, unpaired, "test")["tasks"]["bm"]["auc"]["p_value"]
    )


def test_the_reference_gets_no_p_value_and_the_csv_has_every_row():
    models = compare_models("ref", {"ref": REFERENCE, "other": OTHER}, "test")
    assert models["ref"]["metrics"]["bm"]["auc"]["test"] is None
    assert math.isnan(models["ref"]["metrics"]["bm"]["auc"]["p_value"])
    lines = comparison_csv(models, "model").splitlines()
    assert lines[0] == "model,kind,task,metric,mean,sd,ci_low,ci_high,runs,p_value,test"
    assert len(lines) == 1 + 2 * 3  # two models x (auc, acc, one consistency share)
    assert any(line.startswith("other,consistency,,alnm_without_bm,") for line in lines)


def predictions_csv(labels, probs, patients) -> str:
    rows = ["image_id,patient_id,split,bm_label,bm_prob"]
    rows += [f"im{i},{patients[i]},test,{labels[i]},{probs[i]:.6f}" for i in range(len(labels))] + [
        "extra,p,val,1,0.5"
    ]
    return "\n".join(rows) + "\n"


def test_one_run_is_compared_from_the_predictions():
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    ours = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, len(y)), 0, 1)
    theirs = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.2, len(y)), 0, 1)
    patients = [f"p{i // 2}" for i in range(len(y))]
    reference = prediction_rows(predictions_csv(y, ours, patients), "test")
    other = prediction_rows(predictions_csv(y, theirs, patients), "test")
    assert len(reference) == 40  # the val row is left out
    test = predictions_test(reference, other, {"acc": accuracy}, 0.5, 500, 0)
    p, name = test("bm", "auc")
    rounded = np.round(ours, 6), np.round(theirs, 6)
    assert name == "paired DeLong"
    assert p == pytest.approx(paired_delong(y, rounded[1], rounded[0])["p_value"])
    p, name = test("bm", "acc")
    assert name == "paired bootstrap over patients" and 0 < p <= 1
    identical = predictions_test(reference, reference, {"acc": accuracy}, 0.5, 500, 0)
    assert identical("bm", "auc")[0] == 1.0 and identical("bm", "acc")[0] == 1.0
    p, name = predictions_test(reference, other, {"acc": accuracy}, 0.5, 0, 0)("bm", "acc")
    assert math.isnan(p) and name is None  # no bootstrap asked for


HOSTILE_RUNS = [
    {"sets": {"test": {"tasks": [1]}}},
    {"sets": {"test": {"tasks": {"bm": 3}}}},
    {"runs": {"seed_0": 5}},
    {"sets": {"test": {"consistency": [1]}}},
    {"sets": {"test": {"tasks": {"bm": {"auc": 10**400, "acc": "0.5", "f1": True}}}}},
    {},
]
HOSTILE_TABLES = [
    {"models": [1]},
    {"models": {"a": {"metrics": [1]}}},
    {"models": {"a": {"metrics": {"bm": 3}}}},
    [],
    None,
    {
        "models": {
            "<b>a</b>": {
                "metrics": {"bm": {"auc": {"mean": 10**400, "p_value": 10**400, "ci95": ["x"]}}},
                "consistency": {"x_without_<i>": {"mean": "a", "p_value": "0.01"}},
            }
        },
        "reference": "<script>",
    },
]


@pytest.mark.parametrize("document", HOSTILE_RUNS)
def test_malformed_results_read_back_are_no_numbers_not_a_crash(document):
    good = run_document(0.7, 0.6, 0.1)
    for row in compare_documents(good, document, "test")["tasks"].get("bm", {}).values():
        assert math.isnan(row["mean"])
    compare_documents(document, good, "test")


@pytest.mark.parametrize("document", HOSTILE_TABLES)
def test_malformed_comparison_files_render_escaped_or_not_at_all(document):
    page = comparison_html(document, "models", "model")
    assert "<b>a</b>" not in page and "<script>" not in page and "<i>" not in page
    text = "\n".join(comparison_markdown(document, "models", "model", "t"))
    assert "<b>" not in text and "<script>" not in text


def test_an_ablation_names_only_sibling_folders(tmp_path):
    for name in ("full", "other", "outside"):
        (tmp_path / "ablation" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "ablation" / name / "metrics.json").write_text("{}")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "metrics.json").write_text("{}")
    run = RunFiles(root=tmp_path / "ablation" / "full")
    run.ablation = {
        "reference": "full",
        "variants": {
            "full": {},
            "other": {},
            "../outside": {},
            str(tmp_path / "outside"): {},
            "": {},
        },
    }
    assert [r.name for r in ablation_siblings(run)] == ["other"]
    run.ablation["reference"] = "other"  # only the reference draws the others
    assert ablation_siblings(run) == []
