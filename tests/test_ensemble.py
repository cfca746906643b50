"""The ensemble of the seeds (``evaluation.ensemble``): each image's probabilities averaged
over a fold's seeds and scored as one model, in metrics.json, ensemble_predictions.csv,
report.md and report.html; none with one seed; the same after ``mtl resume``."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_raw

from mtlkit import (
    MulticlassHead,
    MulticlassOptions,
    UsageError,
    binary_auc,
    csv_cell,
    load_config,
    run,
)
from mtlkit.cli import main
from mtlkit.config.schema import EvaluationConfig
from mtlkit.data.prepared import PreparedData
from mtlkit.data.samples import Sample
from mtlkit.evaluation.documents import predictions_csv, read_predictions_csv
from mtlkit.evaluation.ensemble import mean_predictions, score_ensemble
from mtlkit.plugins.heads import BMHead, BMOptions
from mtlkit.plugins.metrics import accuracy, auc, f1, precision, sensitivity, specificity
from mtlkit.results import Predictions

METRIC_FNS = {
    "acc": accuracy,
    "se": sensitivity,
    "sp": specificity,
    "precision": precision,
    "f1": f1,
    "auc": auc,
}
EXTERNAL = {"type": "synthetic", "patients": 10, "image_size": 32, "seed": 7}

# --- from hand-made predictions -------------------------------------------------------------

BM = [1, 1, 1, 0, 0, 0]
SIZE = [0, 1, 2, 0, 1, 2]  # classes s, m, l
MEMBER_A = {
    "bm": [0.9, 0.4, 0.6, 0.3, 0.7, 0.2],
    "size": [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]]
    + [[0.3, 0.4, 0.3], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]],
}
MEMBER_B = {
    "bm": [0.7, 0.6, 0.2, 0.1, 0.5, 0.4],
    "size": [[0.3, 0.4, 0.3], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]]
    + [[0.6, 0.2, 0.2], [0.1, 0.6, 0.3], [0.6, 0.4, 0.0]],
}


def hand_heads():
    return [
        BMHead(BMOptions()),
        MulticlassHead(MulticlassOptions(name="size", label="size", classes=["s", "m", "l"])),
    ]


def hand_data() -> PreparedData:
    ids = [f"img{i}" for i in range(5)] + ["=img5"]  # '=img5 in a CSV file
    patients = ["p0", "p0", "p1", "p2", "p3", "p3"]
    return PreparedData(
        samples=[Sample(i, p, {}, lambda: None) for i, p in zip(ids, patients, strict=True)],
        task_names=["bm", "size"],
        targets=torch.tensor(np.array([BM, SIZE], dtype=np.float32).T),
        folds=[["test"] * 6],
        groups=patients,
        cache=torch.zeros((6, 1, 2, 2), dtype=torch.uint8),
        references={},
    )


def member(probabilities) -> Predictions:
    data = hand_data()
    return Predictions(
        "test",
        [s.image_id for s in data.samples],
        [s.patient_id for s in data.samples],
        {"bm": np.array(BM, dtype=float), "size": np.array(SIZE, dtype=float)},
        {k: np.array(v) for k, v in probabilities.items()},
    )


def test_the_ensemble_averages_each_images_probabilities_and_is_scored_like_a_model():
    a, b = member(MEMBER_A), member(MEMBER_B)
    mean = mean_predictions([a, b])
    assert mean.probabilities["bm"] == pytest.approx([0.8, 0.5, 0.4, 0.2, 0.6, 0.3])
    assert mean.probabilities["size"][5] == pytest.approx([0.4, 0.35, 0.25])

    # as the run reads them: from each member's predictions.csv
    heads = hand_heads()
    read = [read_predictions_csv(predictions_csv([m], heads), heads, "csv") for m in (a, b)]
    data = hand_data()
    evals = score_ensemble(
        read,
        {"test": (data, data.indices("test"))},
        heads,
        METRIC_FNS,
        [],
        [],
        EvaluationConfig(),
    )
    bm = evals["test"].tasks["bm"]
    # At 0.5 (positive when above): TP img0; FN img1 (0.5), img2; FP img4; TN img3, img5.
    assert bm["acc"] == pytest.approx(3 / 6)  # the members score 4/6 and 5/6 on their own
    assert bm["se"] == pytest.approx(1 / 3) and bm["sp"] == pytest.approx(2 / 3)
    assert bm["precision"] == pytest.approx(1 / 2) and bm["f1"] == pytest.approx(2 / 5)
    # positives 0.8, 0.5, 0.4 against negatives 0.2, 0.6, 0.3: 3 + 2 + 2 of 9 pairs
    assert bm["auc"] == pytest.approx(7 / 9)
    assert bm["brier"] == pytest.approx((0.04 + 0.25 + 0.36 + 0.04 + 0.36 + 0.09) / 6)
    assert bm["n"] == 6 and bm["n_positive"] == 3 and len(bm["auc_ci_delong"]) == 2
    # the mean's argmax: s, m, l, s, m, then s for the l of img5
    assert evals["test"].tasks["size"]["acc"] == pytest.approx(5 / 6)
    assert accuracy(np.array(SIZE), a.probabilities["size"], 0.5) == pytest.approx(4 / 6)


def test_members_of_other_images_are_refused():
    a, b = member(MEMBER_A), member(MEMBER_B)
    b.image_ids = b.image_ids[::-1]
    with pytest.raises(ValueError, match="different images"):
        mean_predictions([a, b])


def test_predictions_csv_reads_back_as_it_was_written():
    heads = hand_heads()
    written = member(MEMBER_A)
    again = read_predictions_csv(predictions_csv([written], heads), heads, "predictions.csv")
    assert list(again) == ["test"]
    read = again["test"]
    assert read.image_ids == [csv_cell(i) for i in written.image_ids]  # as the file holds them
    assert read.image_ids[5] == "'=img5" and read.patient_ids == written.patient_ids
    for task in ("bm", "size"):
        np.testing.assert_array_equal(read.targets[task], written.targets[task])
        np.testing.assert_allclose(read.probabilities[task], written.probabilities[task])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.replace("image_id,", "image,", 1), "does not have the columns"),
        (lambda t: t.replace("0.900000", "0.9x", 1), "line 2: '0.9x' is not a probability"),
        (lambda t: t.replace("0.900000", "1.5", 1), "line 2: '1.5' is not a probability"),
        (lambda t: t.replace(",1,0.9", ",yes,0.9", 1), "line 2: bm label 'yes'"),
        (lambda t: t.replace(",l,", ",xl,", 1), "size label 'xl'"),
        (lambda t: t.rstrip("\n") + ",extra\n", "cells, expected"),
    ],
)
def test_a_damaged_predictions_csv_is_a_usage_error_naming_it(change, message):
    heads = hand_heads()
    text = change(predictions_csv([member(MEMBER_A)], heads))
    with pytest.raises(UsageError, match=re.escape(message)) as raised:
        read_predictions_csv(text, heads, "run/seed_1/predictions.csv")
    assert "run/seed_1/predictions.csv" in str(raised.value)


# --- in a run --------------------------------------------------------------------------------


def ensemble_raw(**overrides):
    raw = tiny_raw(name="ensemble", **{"seed": [0, 1], **overrides})
    raw["evaluation"]["ensemble"] = True
    return raw


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory) -> Path:
    """Two seeds on one split with an external set, every report but the gallery."""
    raw = ensemble_raw(reports=["summary", "markdown", "html"])
    raw["evaluation"]["external"] = [{"name": "hospital_b", "source": EXTERNAL}]
    out = tmp_path_factory.mktemp("ensemble") / "run"
    run(load_config(raw), out_dir=out)
    return out


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_a_run_scores_the_ensemble_of_its_seeds_on_every_set(ensemble_run):
    metrics = json.loads((ensemble_run / "metrics.json").read_text())
    ensemble = metrics["ensemble"]
    assert ensemble["seeds"] == [0, 1] and "runs" not in ensemble  # one fold
    assert list(ensemble["sets"]) == list(metrics["sets"]) == ["val", "test", "hospital_b"]
    per_seed = [rows_of(ensemble_run / f"seed_{s}" / "predictions.csv") for s in (0, 1)]
    mine = rows_of(ensemble_run / "ensemble_predictions.csv")
    assert [r["image_id"] for r in mine] == [r["image_id"] for r in per_seed[0]]
    for split in ("test", "hospital_b"):
        seeds = [[r for r in rows if r["split"] == split] for rows in per_seed]
        probs = np.mean([[float(r["bm_prob"]) for r in rows] for rows in seeds], axis=0)
        labels = np.array([int(r["bm_label"]) for r in seeds[0]])
        bm = ensemble["sets"][split]["tasks"]["bm"]
        assert bm["auc"] == pytest.approx(binary_auc(labels, probs))
        assert bm["acc"] == pytest.approx(np.mean((probs > 0.5) == labels))
        assert bm["n"] == metrics["sets"][split]["tasks"]["bm"]["n"] == len(labels)
        shown = [float(r["bm_prob"]) for r in mine if r["split"] == split]
        assert shown == pytest.approx(probs, abs=1e-6)
        assert set(ensemble["sets"][split]["consistency"]) == set(
            metrics["sets"][split]["consistency"]
        )
        assert "calibration" in ensemble["sets"][split]


def test_the_reports_show_the_ensemble_beside_the_seeds(ensemble_run, tmp_path):
    markdown = (ensemble_run / "report.md").read_text()
    assert "| bm | CNN |" in markdown and "| bm | CNN, ensemble of 2 seeds |" in markdown
    assert "Ensemble of 2 seeds: each image's probabilities averaged" in markdown
    page = (ensemble_run / "report.html").read_text()
    assert page.count("<h4>Ensemble of 2 seeds</h4>") == 3  # val, test, hospital_b
    copy = tmp_path / "run"
    shutil.copytree(ensemble_run, copy)
    assert main(["report", str(copy)]) == 0  # from the files alone: the same page
    assert (copy / "report.html").read_text() == page


def test_a_resumed_run_scores_the_same_ensemble(ensemble_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(ensemble_run, copy)
    # as if killed before seed 1 started: seed 0 is read back from its files
    shutil.rmtree(copy / "seed_1")
    for name in ("metrics.json", "predictions.csv", "ensemble_predictions.csv"):
        (copy / name).unlink()
    assert main(["resume", str(copy), "--quiet"]) == 0
    for name in ("metrics.json", "ensemble_predictions.csv"):
        assert (copy / name).read_bytes() == (ensemble_run / name).read_bytes(), name


def test_k_folds_get_one_ensemble_per_fold_summarised_over_the_folds(tmp_path):
    raw = ensemble_raw(reports=["markdown"])
    raw["data"]["split"] = {"folds": 2, "val_fraction": 0.15, "stratify": ["bm"]}
    raw["training"]["epochs"] = 1
    run(load_config(raw), out_dir=tmp_path / "cv")
    ensemble = json.loads((tmp_path / "cv" / "metrics.json").read_text())["ensemble"]
    assert list(ensemble["runs"]) == ["fold_1", "fold_2"]
    per_fold = [ensemble["runs"][f"fold_{k}"]["sets"]["test"]["tasks"]["bm"] for k in (1, 2)]
    summary = ensemble["sets"]["test"]["tasks"]["bm"]["acc"]
    assert summary["values"] == [fold["acc"] for fold in per_fold]
    assert summary["mean"] == pytest.approx(np.mean(summary["values"]))
    rows = rows_of(tmp_path / "cv" / "ensemble_predictions.csv")
    test_rows = [r for r in rows if r["split"] == "test"]
    assert {r["fold"] for r in test_rows} == {"1", "2"}
    cnn = rows_of(tmp_path / "cv" / "predictions.csv")
    out_of_fold = [r["image_id"] for r in cnn if r["split"] == "test" and r["seed"] == "0"]
    assert sorted(r["image_id"] for r in test_rows) == sorted(out_of_fold)  # once each
    assert "mean ± SD over the folds" in (tmp_path / "cv" / "report.md").read_text()


def test_one_seed_has_no_ensemble(tmp_path, capsys):
    raw = ensemble_raw(seed=0)
    run(load_config(raw), out_dir=tmp_path / "one")
    assert "one seed per fold, so there is no ensemble" in " ".join(capsys.readouterr().err.split())
    assert "ensemble" not in json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert not (tmp_path / "one" / "ensemble_predictions.csv").exists()
    assert "nsemble of" not in (tmp_path / "one" / "report.md").read_text()


def test_the_option_is_recorded_only_when_set():
    from mtlkit.config.loading import dump_config

    assert "ensemble" not in dump_config(load_config(tiny_raw(seed=[0, 1])))
    assert "ensemble: true" in dump_config(load_config(ensemble_raw()))
