"""`mtl data describe`: Table 1 (training + validation vs test) with its tests, checked
against scipy on hand-picked groups and against hand and textbook computations."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil

import numpy as np
import pytest
import yaml
from conftest import tiny_raw, write_yaml
from scipy import stats

from mtlkit.cli import main
from mtlkit.data.characteristics import chi_square, format_p, t_test

TEST_PATIENTS = {f"p{i:04d}" for i in range(6)}
VAL_PATIENTS = {"p0006", "p0007"}
# Hand-picked per-patient metadata; p0003 (test) and p0010 (train) have no age, p0012 no side.
AGES = {f"p{i:04d}": 40 + (i * 7) % 31 for i in range(24)}
AGES["p0003"] = AGES["p0010"] = ""
SIDES = {f"p{i:04d}": ("left" if i % 3 else "right") for i in range(24)}
SIDES["p0012"] = ""


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rows of the printed table on one line each (rich wraps cells at 80 columns)."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    from mtlkit.plugins.synthetic.phantoms import (
        PhantomSettings,
        generate_phantoms,
        write_phantom_set,
    )

    out = tmp_path_factory.mktemp("describe") / "set"
    write_phantom_set(generate_phantoms(PhantomSettings(patients=24, image_size=32), seed=0), out)
    return out


@pytest.fixture
def dataset(phantom_folder, tmp_path):
    """The phantom set with age and side per patient, device per image (one of them a
    would-be spreadsheet formula), a free-text note and a hand-written split: (config, rows)."""
    folder = tmp_path / "set"
    shutil.copytree(phantom_folder, folder)
    with (folder / "manifest.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows, header = list(reader), list(reader.fieldnames)
    for number, row in enumerate(rows):
        row["age"] = AGES[row["patient_id"]]
        row["side"] = SIDES[row["patient_id"]]
        row["device"] = "=HYPERLINK" if number % 2 else "logiq"
        row["note"] = f"seen on day {number}"
        row["diagnosis"] = row["bm"]
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, [*header, "age", "side", "device", "note", "diagnosis"])
        writer.writeheader()
        writer.writerows(rows)

    def part(patients):
        chosen = [r for r in rows if r["patient_id"] in patients]
        return {
            "images": [r["image"] for r in chosen],
            "patients": sorted({r["patient_id"] for r in chosen}),
        }

    train = {r["patient_id"] for r in rows} - TEST_PATIENTS - VAL_PATIENTS
    split = {"version": 1, "train": part(train), "val": part(VAL_PATIENTS)}
    split["test"] = part(TEST_PATIENTS)
    (tmp_path / "splits.json").write_text(json.dumps(split), encoding="utf-8")
    raw = tiny_raw()
    raw["data"]["source"] = {"type": "manifest", "path": str(folder / "manifest.csv")}
    raw["data"]["split"] = {"file": str(tmp_path / "splits.json")}
    return write_yaml(tmp_path / "config.yaml", raw), rows


def describe(config, tmp_path, capsys, *options):
    out = tmp_path / "described"
    code = main(["data", "describe", str(config), "--quiet", "--out", str(out), *options])
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())  # rich wraps long lines
    assert code == 0, text
    document = json.loads((out / "characteristics.json").read_text(encoding="utf-8"))
    return document, text, out


def in_test(patient):
    return patient in TEST_PATIENTS


def test_numeric_and_categorical_tests_equal_scipy_on_the_groups(dataset, tmp_path, capsys):
    config, _ = dataset
    document, text, _ = describe(config, tmp_path, capsys)

    ages = {g: [AGES[p] for p in AGES if in_test(p) == (g == "test") and AGES[p] != ""]
            for g in ("train_val", "test")}  # fmt: skip
    age = document["numeric"]["age"]
    assert age["unit"] == "patients"
    expected = stats.ttest_ind(ages["train_val"], ages["test"])  # Student's, as the paper
    assert age["hypothesis_test"]["method"] == "student_t"
    assert age["hypothesis_test"]["p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert age["hypothesis_test"]["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert age["groups"]["train_val"]["mean"] == pytest.approx(np.mean(ages["train_val"]))
    assert age["groups"]["train_val"]["sd"] == pytest.approx(np.std(ages["train_val"], ddof=1))
    groups = age["groups"]
    assert (groups["train_val"]["n"], groups["test"]["n"], groups["total"]["n"]) == (17, 5, 22)
    assert (groups["train_val"]["missing"], groups["test"]["missing"]) == (1, 1)

    table = [
        [sum(1 for p, s in SIDES.items() if in_test(p) == (g == "test") and s == side)
         for side in ("left", "right")]
        for g in ("train_val", "test")
    ]  # fmt: skip
    side = document["categorical"]["side"]
    assert table == [[12, 5], [4, 2]]
    chi = stats.chi2_contingency(table)  # 2 x 2: Yates' correction, scipy's default
    assert (chi.expected_freq < 5).any()  # so the p-value is Fisher's exact test's
    assert side["hypothesis_test"]["method"] == "fisher_exact"
    assert side["hypothesis_test"]["p"] == pytest.approx(stats.fisher_exact(table).pvalue)
    assert side["hypothesis_test"]["chi_square_p"] == pytest.approx(chi.pvalue)
    assert side["levels"] == {
        "left": {"train_val": table[0][0], "test": table[1][0], "total": 16},
        "right": {"train_val": table[0][1], "test": table[1][1], "total": 7},
    }
    assert side["missing"] == {"train_val": 1, "test": 0, "total": 1}
    assert f"│ {format_p(age['hypothesis_test']['p'])} │ t-test" in text
    assert "Fisher: Fisher's exact test (2 x 2 table with an expected count below 5)" in text


def test_the_categorical_test_is_the_chi_square_when_counts_are_large(dataset, tmp_path, capsys):
    """device alternates per image: 2 levels x 2 groups, every expected count >= 5."""
    config, rows = dataset
    document, _, out = describe(config, tmp_path, capsys)
    device = document["categorical"]["device"]
    assert device["unit"] == "images"  # a patient's images differ
    table = [
        [sum(1 for n, r in enumerate(rows) if in_test(r["patient_id"]) == (g == "test")
             and (n % 2 == 1) == formula) for formula in (True, False)]
        for g in ("train_val", "test")
    ]  # fmt: skip
    chi = stats.chi2_contingency(table)
    assert (chi.expected_freq >= 5).all()
    assert device["hypothesis_test"]["method"] == "chi_square_yates"
    assert device["hypothesis_test"]["p"] == pytest.approx(chi.pvalue, rel=1e-12)
    assert device["hypothesis_test"]["df"] == 1
    written = list(csv.DictReader(io.StringIO((out / "characteristics.csv").read_text())))
    levels = [r["level"] for r in written if r["characteristic"] == "device"]
    assert levels == ["'=HYPERLINK", "logiq"]  # formula-safe CSV cells


def test_counts_per_task_class_patients_and_images(dataset, tmp_path, capsys):
    config, rows = dataset
    document, text, _ = describe(config, tmp_path, capsys)
    counts = document["counts"]
    test_rows = [r for r in rows if in_test(r["patient_id"])]
    assert counts["test"] == {"patients": 6, "images": len(test_rows)}
    assert counts["train_val"] == {"patients": 18, "images": len(rows) - len(test_rows)}
    assert counts["total"] == {"patients": 24, "images": len(rows)}

    def expected(task_of, group):
        chosen = [
            r for r in rows if (group == "total" or in_test(r["patient_id"]) == (group == "test"))
        ]
        out = {}
        for level in ("negative", "positive", "unknown"):
            mine = [r for r in chosen if task_of(r) == level]
            out[level] = {"patients": len({r["patient_id"] for r in mine}), "images": len(mine)}
        return out

    def bm(row):
        return "positive" if row["bm"] == "malignant" else "negative"

    def burden(k):
        def task(row):
            if row["bm"] == "benign":  # negative_if: benign tumours have no nodal metastasis
                return "negative"
            if row["alnm_count"] == "":
                return "unknown"
            return "positive" if int(row["alnm_count"]) >= k else "negative"

        return task

    tasks = {"bm": bm, "alnm": burden(1), "alnm_ge2": burden(2), "alnm_ge3": burden(3)}
    tasks["alnm_ge4"] = burden(4)
    for task, task_of in tasks.items():
        found = document["tasks"][task]
        for group in ("train_val", "test", "total"):
            want = expected(task_of, group)
            got = {level: found["classes"][level][group] for level in ("negative", "positive")}
            got["unknown"] = found["unknown"][group]
            assert got == want, (task, group)
            assert found["mixed"][group] == {"patients": 0, "images": 0}
        patients = [
            [found["classes"][level][group]["patients"] for level in ("negative", "positive")]
            for group in ("train_val", "test")
        ]
        assert found["hypothesis_tests"]["patients"]["p"] == pytest.approx(chi_square(patients).p)
    assert "alnm_ge4 (patients/images)" in text
    assert not document["numeric"].keys() - {"age"}  # oracle_* are reference columns
    assert "bm" not in document["categorical"] and "alnm_count" not in document["numeric"]


def test_free_text_is_skipped_and_missing_values_are_rows(dataset, tmp_path, capsys):
    config, _ = dataset
    document, text, out = describe(config, tmp_path, capsys)
    assert "note" in document["skipped"] and "distinct values" in document["skipped"]["note"]
    assert "skipped note:" in text
    written = list(csv.DictReader(io.StringIO((out / "characteristics.csv").read_text())))
    missing = {r["characteristic"]: r for r in written if r["level"] == "missing"}
    assert (missing["age"]["train_val"], missing["age"]["test"], missing["age"]["total"]) == (
        "1",
        "1",
        "2",
    )
    assert missing["side"]["total"] == "1"
    # percentages are of the known values in the group
    left = next(r for r in written if r["characteristic"] == "side" and r["level"] == "left")
    assert left["total"] == f"16 ({100 * 16 / 23:.1f}%)"


def test_column_options(dataset, tmp_path, capsys):
    config, _ = dataset
    document, _, _ = describe(
        config, tmp_path, capsys, "--columns", "side", "--categorical", "age", "--welch"
    )
    assert set(document["categorical"]) == {"side", "age"}
    assert not document["numeric"]
    code = main(["data", "describe", str(config), "--quiet", "--numeric", "side"])
    assert code == 2
    assert "--numeric side: not a number" in " ".join(capsys.readouterr().err.split())
    code = main(["data", "describe", str(config), "--quiet", "--columns", "weight"])
    assert code == 2
    assert "no column 'weight' in the data" in capsys.readouterr().err


def test_a_column_the_heads_read_through_the_columns_option_is_no_metadata(
    dataset, tmp_path, capsys
):
    config, _ = dataset
    document, _, _ = describe(config, tmp_path, capsys)
    assert "diagnosis" in document["categorical"]  # a copy of bm, but no head reads it
    mapped = tmp_path / "mapped.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["data"]["source"]["columns"] = {"bm": "diagnosis"}
    write_yaml(mapped, raw)
    shutil.rmtree(tmp_path / "described")
    document, _, _ = describe(mapped, tmp_path, capsys)
    assert "diagnosis" not in document["categorical"] and "bm" not in document["categorical"]
    # subtype: the phantoms' molecular subtype, which no head of this config reads
    assert set(document["categorical"]) == {"side", "device", "subtype"}


def test_an_existing_out_folder_is_refused_before_reading(dataset, tmp_path, capsys):
    config, _ = dataset
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("keep")
    assert main(["data", "describe", str(config), "--quiet", "--out", str(out)]) == 2
    assert "already exists and is not empty" in " ".join(capsys.readouterr().err.split())
    assert (out / "x").read_text() == "keep"


def test_hand_computed_chi_square_and_t_test():
    # 2 x 2 with Yates' correction: X2 = sum((|O - E| - 0.5)^2 / E); p = erfc(sqrt(X2 / 2))
    table = np.array([[30, 20], [15, 35]])
    expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
    x2 = (((np.abs(table - expected) - 0.5) ** 2) / expected).sum()
    found = chi_square(table)
    assert found.method == "chi_square_yates"
    assert found.statistic == pytest.approx(x2, rel=1e-12)
    assert found.p == pytest.approx(math.erfc(math.sqrt(x2 / 2)), rel=1e-12)
    # 2 x 3 without correction; with 2 degrees of freedom p = exp(-X2 / 2)
    table = np.array([[20, 15, 25], [10, 20, 10]])
    expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
    x2 = (((table - expected) ** 2) / expected).sum()
    found = chi_square(table)
    assert (found.method, found.df) == ("chi_square", 2)
    assert found.p == pytest.approx(math.exp(-x2 / 2), rel=1e-12)
    # Student's sleep data (R: t.test(extra ~ group, sleep, var.equal = TRUE)):
    # t = -1.8608, df = 18, p-value = 0.07919; Welch: df = 17.776, p-value = 0.07939
    first = np.array([0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0])
    second = np.array([1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4])
    student = t_test(first, second)
    pooled = ((first.var(ddof=1) + second.var(ddof=1)) / 2) * (2 / 10)
    assert student.statistic == pytest.approx((first.mean() - second.mean()) / pooled**0.5)
    assert (round(student.statistic, 4), student.df, round(student.p, 5)) == (-1.8608, 18, 0.07919)
    welch = t_test(first, second, welch=True)
    assert (round(welch.df, 3), round(welch.p, 5)) == (17.776, 0.07939)


def test_small_tables_fall_back_to_fisher_and_degenerate_ones_have_no_p():
    table = np.array([[8, 2], [1, 5]])
    found = chi_square(table)
    assert found.method == "fisher_exact"
    assert found.p == pytest.approx(stats.fisher_exact(table).pvalue)
    assert found.chi_square_p == pytest.approx(stats.chi2_contingency(table).pvalue)
    wide = chi_square(np.array([[8, 2, 1], [1, 5, 3]]))
    assert wide.method == "chi_square" and "approximate" in wide.note
    assert chi_square(np.array([[5, 0], [7, 0]])).p is None  # one category only
    assert t_test(np.array([1.0]), np.array([2.0, 3.0])).p is None
    assert t_test(np.array([2.0, 2.0]), np.array([2.0, 2.0])).p is None


@pytest.mark.parametrize(
    ("p", "text"),
    [(0.25, "0.25"), (0.9, "0.90"), (0.0496, "0.050"), (0.051, "0.051"), (0.056, "0.06"),
     (0.004, "0.004"), (0.0009, "<0.001"), (0.999, ">0.99"), (None, "-")],
)  # fmt: skip
def test_p_values_print_as_in_the_paper(p, text):
    assert format_p(p) == text


def test_synthetic_data_with_folds(tmp_path, capsys):
    raw = tiny_raw()
    raw["data"]["split"] = {"folds": 3, "val_fraction": 0.2, "stratify": ["bm"]}
    config = write_yaml(tmp_path / "config.yaml", raw)
    document, text, out = describe(config, tmp_path, capsys, "--fold", "2")
    assert (document["fold"], document["folds"]) == (2, 3)
    assert set(document["tasks"]) == {"bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"}
    assert document["counts"]["total"]["patients"] == 24
    assert 7 <= document["counts"]["test"]["patients"] <= 9  # one third
    assert not document["numeric"]  # oracle_*: references
    assert set(document["categorical"]) == {"subtype"}  # the phantoms' subtype: no head reads it
    assert "fold 2 of 3" in text and "alnm_ge4 (patients/images)" in text
    assert (out / "characteristics.csv").read_text().startswith("characteristic,level,")
    assert main(["data", "describe", str(config), "--quiet", "--fold", "4"]) == 2
    assert "--fold 4: the split has 3 fold(s)" in capsys.readouterr().err
