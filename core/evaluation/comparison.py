"""Two models compared on the same test images: each metric's summary over the runs and
the p-value of the difference (the paper's Tables 2-4: the CNN against the radiomics
model, every ablation variant against the full model).

Runs are paired by their label (``seed_1``, ``fold_2/seed_1``): the same split and seed.
With two or more pairs, the p-value is the paired t-test over runs (the paper's setting:
repeated runs on one fixed test split). With one run, the two models' probabilities on the
same images are compared: the paired DeLong test for AUC and a paired patient-level
bootstrap for every other metric.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mtlkit.evaluation.auc import paired_delong
from mtlkit.evaluation.bootstrap import paired_bootstrap
from mtlkit.evaluation.statistics import paired_t_test, summarize
from mtlkit.files_in import MAX_TABLE_BYTES, read_bytes
from mtlkit.text import csv_cell

COUNT_KEYS = ("n", "n_positive")


def finite(value: Any) -> float:
    """A number read back from a results file, NaN for anything else (text, a list, a
    boolean, an integer too large for a float, infinity)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return math.nan
    try:
        number = float(value)
    except OverflowError:
        return math.nan
    return number if math.isfinite(number) else math.nan


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def split_of(document: Any, split: str) -> Mapping[str, Any]:
    """One set of a metrics document (empty when absent or malformed)."""
    return _mapping(_mapping(_mapping(document).get("sets")).get(split))


def run_values(document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Every run's metrics document by run label: ``runs`` of repeated runs, or the
    document itself for a single run (label ``""``)."""
    runs = _mapping(_mapping(document).get("runs"))
    usable = {str(k): v for k, v in runs.items() if isinstance(v, Mapping)}
    return usable or {"": _mapping(document)}


def metric_of(document: Mapping[str, Any], split: str, task: str, metric: str) -> float:
    """One run's metric (NaN when absent or not a number)."""
    return finite(_mapping(_mapping(split_of(document, split).get("tasks")).get(task)).get(metric))


def share_of(document: Mapping[str, Any], split: str, relation: str) -> float:
    """One run's consistency share (NaN when absent or not a number)."""
    return finite(_mapping(split_of(document, split).get("consistency")).get(relation))


def p_value_text(row: Any) -> str:
    """A row's p-value as the paper prints it (``<0.001``, ``0.042``); ``-`` without one."""
    p = finite(row.get("p_value")) if isinstance(row, Mapping) else math.nan
    if math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


NOT_COMPARED = ("n", "n_positive", "reference_auc")
"""Keys of a task's metrics that are no model's performance: counts, and the AUC of the
data's own reference column (the same for every model)."""


SinglePairTest = Callable[[str, str], tuple[float, str]]
"""``(task, metric) -> (p-value, test name)`` from the two models' predictions, for one run."""


def compare_documents(
    reference: Mapping[str, Any],
    other: Mapping[str, Any],
    split: str,
    single_run_test: SinglePairTest | None = None,
) -> dict[str, Any]:
    """Per task and metric of ``other`` on ``split``: its summary over runs
    (:func:`~mtlkit.evaluation.statistics.summarize`) with ``p_value`` and ``test`` against
    ``reference``; per consistency relation likewise (paired t-test only). Tasks or
    relations the reference lacks get no p-value (``test: null``)."""
    theirs, ours = run_values(other), run_values(reference)
    paired = [label for label in theirs if label in ours]
    first = split_of(next(iter(theirs.values())), split)
    tasks: dict[str, Any] = {}
    for task, metrics in _mapping(first.get("tasks")).items():
        if not isinstance(metrics, Mapping):
            continue
        tasks[task] = {}
        for metric, value in metrics.items():
            if metric in COUNT_KEYS or not (value is None or isinstance(value, int | float)):
                continue
            row = summarize([metric_of(d, split, task, metric) for d in theirs.values()])
            if metric in NOT_COMPARED:
                row.update(p_value=math.nan, test=None)
            else:
                row.update(_p_value(ours, theirs, paired, split, task, metric, single_run_test))
            tasks[task][metric] = row
    consistency: dict[str, Any] = {}
    for relation in _mapping(first.get("consistency")):
        row = summarize([share_of(d, split, relation) for d in theirs.values()])
        a = [share_of(theirs[k], split, relation) for k in paired]
        b = [share_of(ours[k], split, relation) for k in paired]
        known = [x for x in b if not math.isnan(x)]
        row.update(
            {"p_value": paired_t_test(a, b)["p_value"], "test": "paired t-test over runs"}
            if len(known) >= 2
            else {"p_value": math.nan, "test": None}
        )
        consistency[relation] = row
    return {"tasks": tasks, "consistency": consistency, "paired_runs": paired}


def _p_value(ours, theirs, paired, split, task, metric, single_run_test) -> dict[str, Any]:
    a = [metric_of(theirs[k], split, task, metric) for k in paired]
    b = [metric_of(ours[k], split, task, metric) for k in paired]
    if all(math.isnan(x) for x in b):
        return {"p_value": math.nan, "test": None}
    if len(paired) >= 2:
        return {"p_value": paired_t_test(a, b)["p_value"], "test": "paired t-test over runs"}
    if len(paired) == 1 and single_run_test is not None:
        p, test = single_run_test(task, metric)
        return {"p_value": p, "test": test}
    return {"p_value": math.nan, "test": None}


def compare_models(
    reference: str,
    documents: Mapping[str, Mapping[str, Any]],
    split: str,
    single_run_tests: Mapping[str, SinglePairTest] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every model of ``documents`` (name -> metrics document) against the ``reference``
    one: ``{name: {"metrics": {task: {metric: row}}, "consistency": {relation: row}}}``
    with each row a summary over runs plus ``p_value`` and ``test`` (none for the
    reference itself). ``single_run_tests[name]`` compares one run's predictions."""
    out = {}
    for name, document in documents.items():
        test = (single_run_tests or {}).get(name)
        compared = compare_documents(documents[reference], document, split, test)
        if name == reference:
            for rows in [*compared["tasks"].values(), compared["consistency"]]:
                for row in rows.values():
                    row.update(p_value=math.nan, test=None)
        out[name] = {"metrics": compared["tasks"], "consistency": compared["consistency"]}
    return out


def comparison_csv(models: Mapping[str, Mapping[str, Any]], first_column: str) -> str:
    """The rows of :func:`compare_models` as CSV: one per model, task and metric, then per
    consistency relation (``kind`` says which)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        (first_column, "kind", "task", "metric", "mean", "sd", "ci_low", "ci_high", "runs")
        + ("p_value", "test")
    )
    for name, model in models.items():
        rows = [
            ("metric", task, metric, row)
            for task, metrics in model["metrics"].items()
            for metric, row in metrics.items()
        ]
        rows += [
            ("consistency", "", relation, row) for relation, row in model["consistency"].items()
        ]
        for kind, task, metric, row in rows:
            finite = [v for v in row["values"] if isinstance(v, int | float) and not math.isnan(v)]
            writer.writerow(
                [
                    csv_cell(name),
                    kind,
                    csv_cell(task),
                    csv_cell(metric),
                    *(_number(v) for v in (row["mean"], row["sd"], *row["ci95"])),
                    len(finite),
                    _number(row["p_value"]),
                    row["test"] or "",
                ]
            )
    return buffer.getvalue()


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}"


def prediction_rows(text: str, split: str) -> dict[str, dict[str, str]]:
    """The rows of one predictions.csv (a single run's) on ``split``, by image id."""
    reader = csv.DictReader(io.StringIO(text))
    return {row["image_id"]: row for row in reader if row.get("split") == split}


def predictions_test(
    reference_rows: Mapping[str, Mapping[str, str]],
    other_rows: Mapping[str, Mapping[str, str]],
    metrics: Mapping[str, Callable[[np.ndarray, np.ndarray, float], float]],
    threshold: float,
    resamples: int,
    seed: int,
    by_patient: bool = True,
) -> SinglePairTest:
    """The single-run test of ``other`` against the reference on the images both predicted
    (with the reference's label): the paired DeLong test for ``auc``, and for every other
    metric of ``metrics`` the paired bootstrap over the patients of predictions.csv's
    ``patient_id`` column (over images without ``by_patient``; ``resamples``, ``seed``;
    none with 0 resamples). The probabilities are the ``<task>_prob`` columns."""
    images = [i for i in reference_rows if i in other_rows]

    def test(task: str, metric: str) -> tuple[float, str | None]:
        label, prob = f"{task}_label", f"{task}_prob"
        rows = [
            (reference_rows[i], other_rows[i])
            for i in images
            if reference_rows[i].get(label) in ("0", "1")
            and _number_or_none(reference_rows[i].get(prob)) is not None
            and _number_or_none(other_rows[i].get(prob)) is not None
        ]
        if len(rows) < 2:
            return math.nan, None
        y = np.array([int(ref[label]) for ref, _ in rows])
        ours = np.array([float(ref[prob]) for ref, _ in rows])
        theirs = np.array([float(oth[prob]) for _, oth in rows])
        if metric == "auc":
            return float(paired_delong(y, theirs, ours)["p_value"]), "paired DeLong"
        fn = metrics.get(metric)
        if fn is None or resamples == 0:
            return math.nan, None
        clusters = [ref.get("patient_id", "") for ref, _ in rows] if by_patient else None
        result = paired_bootstrap(
            y,
            theirs,
            ours,
            lambda yy, pp: float(fn(yy, pp, threshold)),
            clusters=clusters,
            resamples=resamples,
            seed=seed,
        )
        unit = "patients" if by_patient else "images"
        return float(result["p_value"]), f"paired bootstrap over {unit}"

    return test


def _number_or_none(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def single_run_tests(
    reference: str,
    folders: Mapping[str, Any],
    documents: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Callable[[np.ndarray, np.ndarray, float], float]],
    threshold: float,
    resamples: int,
    seed: int,
    split: str = "test",
    by_patient: bool = True,
) -> dict[str, SinglePairTest]:
    """The :func:`predictions_test` of every model against ``reference`` when both are
    single runs, from the predictions.csv in each model's folder (``folders[name]``, a
    Path); none for repeated runs, which the paired t-test compares."""
    if "runs" in documents[reference]:
        return {}

    def rows(name: str) -> dict[str, dict[str, str]]:
        text = read_bytes(folders[name] / "predictions.csv", "predictions.csv", MAX_TABLE_BYTES)
        return prediction_rows(text.decode("utf-8", "replace"), split)

    ours = rows(reference)
    return {
        name: predictions_test(ours, rows(name), metrics, threshold, resamples, seed, by_patient)
        for name, document in documents.items()
        if name != reference and "runs" not in document
    }
