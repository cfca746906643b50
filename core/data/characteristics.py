"""Table 1 of a data set: training and validation against test, as in Li et al. 2022.

Rows: patients and images per group; per task, patients and images of each class (a
patient counts for a class when all of its labelled images have it, as "mixed" when they
disagree, as "unknown" when none is labelled); then every metadata column of the data
source that is no task's label column (nor a file column mapped to one) and no reference
column: numeric when every value it has is a number, as mean ± SD with a t-test;
categorical otherwise, as counts (% of the group's known values) with a chi-square test,
skipped with a note when it has more than ``MAX_CATEGORIES`` distinct values (free text,
ids). A metadata column is counted per patient when each patient's images agree on it
(age, side), else per image (device, view). Missing values are counted on rows of their
own and left out of the tests.

The tests follow the paper ("chi-square test or Student's t-test, where appropriate",
two-sided, scipy): Student's t-test (``welch=True``: Welch's); the chi-square test of
independence of ``scipy.stats.chi2_contingency``, with its default Yates correction when
the table is 2 x 2. When an expected count of a 2 x 2 table is below 5 the p-value is
Fisher's exact test's (the chi-square p stays in the JSON); a larger table with such
counts keeps the chi-square p with a note that it is approximate. Task rows get two
p-values, patients/images; images of one patient are not independent, so the patient p is
the one to read.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from mtlkit.data.labels import as_number, canonical
from mtlkit.data.prepared import PreparedData
from mtlkit.errors import DataError, UsageError, list_problems
from mtlkit.text import csv_cell

VERSION = 1

GROUPS = {"train_val": ("train", "val"), "test": ("test",)}
"""The two groups compared, and the splits each one pools."""

COLUMNS = ("train_val", "test", "total")
TITLES = {"train_val": "Train+val", "test": "Test", "total": "Total"}

MAX_CATEGORIES = 20
"""A column found categorical with more distinct values is skipped (free text, ids)."""

MIN_EXPECTED = 5.0
"""An expected count below this makes the chi-square approximation doubtful."""


@dataclass(frozen=True)
class ColumnChoice:
    """Which metadata columns to describe, and how.

    ``columns`` limits the description to these (default: every metadata column);
    ``numeric`` and ``categorical`` force a column's kind and add it; a column named here
    is described even when it is a label column, and a forced categorical one whatever its
    number of values. Otherwise a column is numeric when every value it has is a number.
    """

    columns: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    max_categories: int = MAX_CATEGORIES
    welch: bool = False


@dataclass(frozen=True)
class GroupTest:
    """One test of training and validation against test; ``p`` is None when it cannot be
    computed (``note`` says why)."""

    method: str  # student_t, welch_t, chi_square, chi_square_yates, fisher_exact
    p: float | None = None
    statistic: float | None = None  # t, chi-square, or Fisher's sample odds ratio
    df: float | None = None
    chi_square_p: float | None = None  # when Fisher's exact test replaced the chi-square
    note: str = ""

    def document(self) -> dict[str, Any]:
        out = {"method": self.method, "p": self.p, "statistic": self.statistic, "df": self.df}
        if self.chi_square_p is not None:
            out["chi_square_p"] = self.chi_square_p
        if self.note:
            out["note"] = self.note
        return out


METHOD_NAMES = {
    "student_t": "t-test",
    "welch_t": "Welch t",
    "chi_square": "chi2",
    "chi_square_yates": "chi2 Yates",
    "fisher_exact": "Fisher",
}
"""Short names of the tests, for the table's ``test`` column."""

LEGEND = {
    "student_t": "Student's two-sided t-test (equal variances, as in the paper)",
    "welch_t": "Welch's two-sided t-test (unequal variances)",
    "chi_square": "chi-square test of independence",
    "chi_square_yates": "chi-square test with Yates' continuity correction (2 x 2 table)",
    "fisher_exact": "Fisher's exact test (2 x 2 table with an expected count below 5)",
}
"""What each short name in the ``test`` column stands for."""


@dataclass(frozen=True)
class Row:
    """One printed row: a characteristic (with ``level`` empty) or one of its levels."""

    characteristic: str
    level: str = ""
    train_val: str = ""
    test: str = ""
    total: str = ""
    p: str = ""
    method: str = ""


@dataclass
class Characteristics:
    """The table: ``rows`` to print or write as CSV, ``document()`` for JSON."""

    fold: int
    n_folds: int
    counts: dict[str, dict[str, int]]  # group -> patients, images
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    numeric: dict[str, dict[str, Any]] = field(default_factory=dict)
    categorical: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    methods: dict[str, None] = field(default_factory=dict)  # the tests used, in order

    def legend(self) -> list[str]:
        """One line per test used: its short name and what it is."""
        return [f"{METHOD_NAMES[m]}: {LEGEND[m]}" for m in self.methods]

    def document(self) -> dict[str, Any]:
        """The content of characteristics.json."""
        return {
            "version": VERSION,
            "fold": self.fold + 1,
            "folds": self.n_folds,
            "groups": {name: list(splits) for name, splits in GROUPS.items()},
            "counts": self.counts,
            "tasks": self.tasks,
            "numeric": self.numeric,
            "categorical": self.categorical,
            "skipped": self.skipped,
            "notes": self.notes,
            "methods": {m: LEGEND[m] for m in self.methods},
        }

    def csv(self) -> str:
        """The content of characteristics.csv: the printed table, one row per line."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for row in self.rows:
            writer.writerow([csv_cell(getattr(row, name)) for name in CSV_HEADER])
        return buffer.getvalue()


CSV_HEADER = ("characteristic", "level", "train_val", "test", "total", "p", "method")


def format_p(p: float | None) -> str:
    """A p-value as tables print it: two decimals like the paper, three below 0.01 and
    where two would print 0.05, ``<0.001`` below 0.001 and ``>0.99`` above 0.99 (AMA
    style); ``-`` when there is none."""
    if p is None or not math.isfinite(p):
        return "-"
    if p < 0.001:
        return "<0.001"
    if p < 0.01 or f"{p:.2f}" == "0.05":
        return f"{p:.3f}"
    if p > 0.99:
        return ">0.99"
    return f"{p:.2f}"


def chi_square(table: np.ndarray) -> GroupTest:
    """Chi-square test of independence of a groups x categories table of counts; Fisher's
    exact test for a 2 x 2 table with an expected count below 5."""
    table = np.asarray(table, dtype=np.int64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return GroupTest("chi_square", note="fewer than two categories have values")
    if (table.sum(axis=1) == 0).any():
        return GroupTest("chi_square", note="a group has no values")
    result = stats.chi2_contingency(table)  # Yates' correction when df == 1 (scipy default)
    method = "chi_square_yates" if result.dof == 1 else "chi_square"
    small = int((result.expected_freq < MIN_EXPECTED).sum())
    chi = GroupTest(method, float(result.pvalue), float(result.statistic), float(result.dof))
    if not small:
        return chi
    if table.shape == (2, 2):
        fisher = stats.fisher_exact(table)
        return GroupTest(
            "fisher_exact",
            float(fisher.pvalue),
            float(fisher.statistic),
            chi_square_p=chi.p,
            note="an expected count is below 5: Fisher's exact test",
        )
    return GroupTest(
        method,
        chi.p,
        chi.statistic,
        chi.df,
        note=f"expected count below 5 in {small} of {table.size} cells: the p-value is approximate",
    )


def t_test(first: np.ndarray, second: np.ndarray, welch: bool = False) -> GroupTest:
    """Two-sided t-test of two groups' means: Student's (equal variances, the paper's) or
    Welch's."""
    method = "welch_t" if welch else "student_t"
    if len(first) < 2 or len(second) < 2:
        return GroupTest(method, note="a group has fewer than two values")
    if np.ptp(first) == 0 and np.ptp(second) == 0:
        return GroupTest(method, note="no variation within either group")
    result = stats.ttest_ind(first, second, equal_var=not welch)
    df = getattr(result, "df", None)
    return GroupTest(
        method, float(result.pvalue), float(result.statistic), None if df is None else float(df)
    )


def describe_data(
    data: PreparedData,
    classes: Mapping[str, Sequence[str]],
    excluded: set[str],
    choice: ColumnChoice = ColumnChoice(),
) -> Characteristics:
    """The characteristics of ``data``'s current fold: training + validation against test.

    ``classes`` names each task's classes in target order; ``excluded`` are the columns
    that are no metadata (the heads' label columns and the columns mapped to them,
    reference columns). Raises UsageError for a named column the data lacks or a split
    without test images, DataError for a forced numeric column holding text.
    """
    members = {name: _rows_in(data, splits) for name, splits in GROUPS.items()}
    if not len(members["test"]):
        where = f"fold {data.fold + 1}: " if data.n_folds > 1 else ""
        raise UsageError(
            f"{where}the split has no test images, so there is nothing to compare; "
            "set data.split.test_fraction (or data.split.folds)"
        )
    members["total"] = np.concatenate([members["train_val"], members["test"]])
    patients = [s.patient_id for s in data.samples]
    counts = {
        name: {"patients": len({patients[i] for i in rows}), "images": len(rows)}
        for name, rows in members.items()
    }
    table = Characteristics(data.fold, data.n_folds, counts)
    if data.n_folds > 1:
        table.notes.append(
            f"cross-validation: fold {data.fold + 1} of {data.n_folds} is described "
            "(its test part against the rest)"
        )
    table.rows += [
        Row("patients", **{c: str(counts[c]["patients"]) for c in COLUMNS}),
        Row("images", **{c: str(counts[c]["images"]) for c in COLUMNS}),
    ]
    for index, task in enumerate(data.task_names):
        _task_rows(table, data, index, task, list(classes[task]), members)
    for column, kind in _choose_columns(data, excluded, choice, table):
        if kind == "numeric":
            _numeric_rows(table, data, column, members, choice.welch)
        else:
            _categorical_rows(table, data, column, members, choice, table.skipped)
    return table


def _rows_in(data: PreparedData, splits: Sequence[str]) -> np.ndarray:
    return np.array([i for i, s in enumerate(data.splits) if s in splits], dtype=np.int64)


def _task_rows(
    table: Characteristics,
    data: PreparedData,
    index: int,
    task: str,
    classes: list[str],
    members: dict[str, np.ndarray],
) -> None:
    targets = data.targets[:, index].numpy()
    image_class = [None if math.isnan(v) else int(v) for v in targets]
    levels = [*classes, "unknown", "mixed"]  # mixed: a patient's images disagree
    image_counts = {c: [0] * len(levels) for c in COLUMNS}
    patient_counts = {c: [0] * len(levels) for c in COLUMNS}
    for column, rows in members.items():
        by_patient: dict[str, set[int]] = {}
        for i in rows:
            known = image_class[i]
            image_counts[column][len(classes) if known is None else known] += 1
            found = by_patient.setdefault(data.samples[i].patient_id, set())
            if known is not None:
                found.add(known)
        for found in by_patient.values():
            level = next(iter(found)) if len(found) == 1 else len(classes) + (len(found) > 1)
            patient_counts[column][level] += 1
    tests = {
        unit: chi_square(np.array([counts[g][: len(classes)] for g in GROUPS]))
        for unit, counts in (("patients", patient_counts), ("images", image_counts))
    }

    def level(k: int) -> dict[str, dict[str, int]]:
        return {
            c: {"patients": patient_counts[c][k], "images": image_counts[c][k]} for c in COLUMNS
        }

    table.tasks[task] = {
        "classes": {name: level(k) for k, name in enumerate(classes)},
        "unknown": level(len(classes)),
        "mixed": level(len(classes) + 1),
        "hypothesis_tests": {unit: test.document() for unit, test in tests.items()},
    }
    methods = list(dict.fromkeys(METHOD_NAMES[t.method] for t in tests.values()))
    table.rows.append(
        Row(
            f"{task} (patients/images)",
            p="/".join(format_p(t.p) for t in tests.values()),
            method="/".join(methods),
        )
    )
    for k, level in enumerate(levels):
        if k >= len(classes) and not patient_counts["total"][k] + image_counts["total"][k]:
            continue  # no unknown or mixed patients: no row
        cells = {c: f"{patient_counts[c][k]}/{image_counts[c][k]}" for c in COLUMNS}
        table.rows.append(Row(task, level, **cells))
    for unit, test in tests.items():
        _record(table, f"{task} ({unit})", test)
    if patient_counts["total"][-1]:
        table.notes.append(
            f"{task}: {patient_counts['total'][-1]} patient(s) have images of different "
            "classes (mixed); they are left out of the patient test"
        )


def _choose_columns(
    data: PreparedData, excluded: set[str], choice: ColumnChoice, table: Characteristics
) -> list[tuple[str, str]]:
    """The metadata columns to describe, in the data's order, each with its kind."""
    present: dict[str, None] = {}
    for sample in data.samples:
        present.update(dict.fromkeys(sample.labels))
    named = [*choice.columns, *choice.numeric, *choice.categorical]
    unknown = [c for c in dict.fromkeys(named) if c not in present]
    if unknown:
        raise UsageError(
            f"no column {', '.join(map(repr, unknown))} in the data "
            f"(columns: {', '.join(present) or 'none'})"
        )
    both = set(choice.numeric) & set(choice.categorical)
    if both:
        raise UsageError(f"column(s) {', '.join(sorted(both))} forced numeric and categorical")
    forced = {
        **dict.fromkeys(choice.numeric, "numeric"),
        **dict.fromkeys(choice.categorical, "categorical"),
    }
    wanted = (
        [c for c in present if c not in excluded] if not choice.columns else list(choice.columns)
    )
    wanted += [c for c in forced if c not in wanted]
    chosen = []
    for column in wanted:
        values = [_value(s.labels.get(column)) for s in data.samples]
        known = [raw for raw, key in values if key is not None]
        if not known:
            table.skipped[column] = "no values"
            continue
        kind = forced.get(column)
        if kind is None:
            kind = "numeric" if all(as_number(v) is not None for v in known) else "categorical"
        elif kind == "numeric":
            bad = [
                f"{s.where()}: {column}={raw!r}"
                for s, (raw, key) in zip(data.samples, values, strict=True)
                if key is not None and as_number(raw) is None
            ]
            if bad:
                raise DataError(list_problems(f"--numeric {column}: not a number:", bad))
        chosen.append((column, kind))
    return chosen


def _value(raw: Any) -> tuple[Any, str | None]:
    """A cell and its comparable key (None: missing)."""
    return raw, canonical(raw)


def _units(
    data: PreparedData, column: str, rows: np.ndarray
) -> tuple[str, list[tuple[Any, str | None]]]:
    """``column``'s values counted per patient when every patient's images agree on it
    (age, side of the lesion), else per image (device, view); returns the unit and the
    values of ``rows`` in it (one per patient: its known value, or missing)."""
    values = {int(i): _value(data.samples[i].labels.get(column)) for i in rows}
    per_patient: dict[str, tuple[Any, str | None]] = {}
    for i, (raw, key) in values.items():
        patient = data.samples[i].patient_id
        seen = per_patient.get(patient)
        if seen is None or seen[1] is None:
            per_patient[patient] = (raw, key)
        elif key is not None and key != seen[1]:
            return "images", list(values.values())
    return "patients", list(per_patient.values())


def _numeric_rows(
    table: Characteristics,
    data: PreparedData,
    column: str,
    members: dict[str, np.ndarray],
    welch: bool,
) -> None:
    unit, _ = _units(data, column, members["total"])
    numbers, missing, summary = {}, {}, {}
    for group, rows in members.items():
        values = _units_as(data, column, rows, unit)
        known = [as_number(raw) for raw, key in values if key is not None]
        numbers[group] = np.array(known, dtype=np.float64)
        missing[group] = len(values) - len(known)
        x = numbers[group]
        summary[group] = {
            "n": len(x),
            "missing": missing[group],
            "mean": float(x.mean()) if len(x) else None,
            "sd": float(x.std(ddof=1)) if len(x) > 1 else None,
            "min": float(x.min()) if len(x) else None,
            "max": float(x.max()) if len(x) else None,
        }
    test = t_test(numbers["train_val"], numbers["test"], welch)
    table.numeric[column] = {"unit": unit, "groups": summary, "hypothesis_test": test.document()}
    table.rows.append(
        Row(
            f"{column} ({unit}), mean ± SD",
            **{g: _mean_sd(summary[g]) for g in COLUMNS},
            p=format_p(test.p),
            method=METHOD_NAMES[test.method],
        )
    )
    if missing["total"]:
        table.rows.append(Row(column, "missing", **{g: str(missing[g]) for g in COLUMNS}))
    _record(table, column, test)


def _units_as(
    data: PreparedData, column: str, rows: np.ndarray, unit: str
) -> list[tuple[Any, str | None]]:
    if unit == "images":
        return [_value(data.samples[i].labels.get(column)) for i in rows]
    return _units(data, column, rows)[1]


def _mean_sd(summary: dict[str, Any]) -> str:
    if summary["mean"] is None:
        return "-"
    if summary["sd"] is None:
        return f"{summary['mean']:.2f}"
    return f"{summary['mean']:.2f} ± {summary['sd']:.2f}"


def _categorical_rows(
    table: Characteristics,
    data: PreparedData,
    column: str,
    members: dict[str, np.ndarray],
    choice: ColumnChoice,
    skipped: dict[str, str],
) -> None:
    unit, _ = _units(data, column, members["total"])
    shown_as: dict[str, str] = {}
    counts: dict[str, dict[str | None, int]] = {}
    for group, rows in members.items():
        counts[group] = {}
        for raw, key in _units_as(data, column, rows, unit):
            if key is not None:
                shown_as.setdefault(key, str(raw).strip())
            counts[group][key] = counts[group].get(key, 0) + 1
    levels = sorted(shown_as, key=_level_order)
    if len(levels) > choice.max_categories and column not in choice.categorical:
        skipped[column] = (
            f"{len(levels)} distinct values (more than {choice.max_categories}): free text or "
            "an id? Force it categorical (--categorical) to describe it anyway"
        )
        return
    test = chi_square(np.array([[counts[g].get(k, 0) for k in levels] for g in GROUPS]))
    table.categorical[column] = {
        "unit": unit,
        "levels": {shown_as[k]: {g: counts[g].get(k, 0) for g in COLUMNS} for k in levels},
        "missing": {g: counts[g].get(None, 0) for g in COLUMNS},
        "hypothesis_test": test.document(),
    }
    table.rows.append(
        Row(f"{column} ({unit}), n (%)", p=format_p(test.p), method=METHOD_NAMES[test.method])
    )
    for key in levels:
        cells = {}
        for group in COLUMNS:
            known = sum(n for k, n in counts[group].items() if k is not None)
            n = counts[group].get(key, 0)
            cells[group] = f"{n} ({100 * n / known:.1f}%)" if known else "0"
        table.rows.append(Row(column, shown_as[key], **cells))
    if any(counts[g].get(None) for g in COLUMNS):
        table.rows.append(
            Row(column, "missing", **{g: str(counts[g].get(None, 0)) for g in COLUMNS})
        )
    _record(table, column, test)


def _record(table: Characteristics, name: str, test: GroupTest) -> None:
    table.methods[test.method] = None
    if test.note and test.method != "fisher_exact":  # the test column says it
        table.notes.append(f"{name}: {test.note}")


def _level_order(key: str) -> tuple[int, float, str]:
    number = as_number(key)
    return (0, number, "") if number is not None else (1, 0.0, key)
