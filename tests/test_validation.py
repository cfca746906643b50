"""k-fold cross-validation, external test sets in a run, and `mtl evaluate` on a checkpoint."""

from __future__ import annotations

import csv
import io
import json

import pytest
from conftest import tiny_raw, write_yaml

from mtlkit import ConfigError, DataError, load_config, run
from mtlkit.cli import main

EXTERNAL = {"type": "synthetic", "patients": 10, "image_size": 32, "seed": 7}


def test_k_fold_puts_every_patient_in_test_exactly_once(tmp_path):
    raw = tiny_raw(name="cv")
    raw["data"]["split"] = {"folds": 3, "val_fraction": 0.15, "stratify": ["bm"]}
    raw["training"]["epochs"] = 1
    result = run(load_config(raw), out_dir=tmp_path / "cv")
    out = result.out_dir
    splits = json.loads((out / "splits.json").read_text())
    assert len(splits["folds"]) == 3
    tested = [p for fold in splits["folds"] for p in fold["test"]["patients"]]
    assert sorted(tested) == sorted(set(tested)) and len(tested) == 24
    for fold in splits["folds"]:
        parts = [set(fold[s]["patients"]) for s in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert parts[1]  # a validation part in every fold
    for k in (1, 2, 3):
        document = json.loads((out / f"fold_{k}" / "metrics.json").read_text())
        assert document["fold"] == k
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["folds"] == 3 and list(metrics["runs"]) == ["fold_1", "fold_2", "fold_3"]
    assert len(metrics["sets"]["test"]["tasks"]["bm"]["auc"]["values"]) == 3
    rows = list(csv.DictReader(io.StringIO((out / "predictions.csv").read_text())))
    test_rows = [r for r in rows if r["split"] == "test"]
    assert {r["fold"] for r in test_rows} == {"1", "2", "3"}
    assert len({r["image_id"] for r in test_rows}) == len(test_rows)  # out-of-fold: once each

    # the split file of a k-fold run is reused exactly
    again = tiny_raw(name="cv")
    again["data"]["split"] = {"file": str(out / "splits.json")}
    again["training"]["epochs"] = 1
    second = run(load_config(again), out_dir=tmp_path / "again")
    assert json.loads((second.out_dir / "splits.json").read_text()) == splits


def test_folds_and_test_fraction_together_are_a_config_error():
    raw = tiny_raw()
    raw["data"]["split"] = {"folds": 5, "test_fraction": 0.3}
    with pytest.raises(ConfigError, match="data.split"):
        load_config(raw)


def test_external_sets_are_evaluated_and_reported_separately(tmp_path, capsys):
    raw = tiny_raw(name="ext")
    raw["evaluation"]["external"] = [{"name": "hospital_b", "source": EXTERNAL}]
    raw["output_dir"] = str(tmp_path / "runs" / "{name}")
    config = write_yaml(tmp_path / "run.yaml", raw)
    assert main(["run", str(config), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ext: test" in printed and "ext: hospital_b" in printed
    out = tmp_path / "runs" / "ext"
    metrics = json.loads((out / "metrics.json").read_text())
    external = metrics["sets"]["hospital_b"]
    assert external["n_patients"] == 10 and set(external["tasks"]) == set(
        metrics["sets"]["test"]["tasks"]
    )
    rows = list(csv.DictReader(io.StringIO((out / "predictions.csv").read_text())))
    assert sum(r["split"] == "hospital_b" for r in rows) == external["n_images"]

    # the same numbers from the saved checkpoint, through `mtl evaluate`
    data = write_yaml(tmp_path / "hospital_b.yaml", {"name": "hospital_b", "source": EXTERNAL})
    checkpoint = out / "checkpoints" / "best.safetensors"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "eval"),
            "--quiet",
        ]
    )
    assert code == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["sets"]["hospital_b"] == external
    assert "hospital_b" in capsys.readouterr().out


def test_an_external_set_sharing_images_with_the_training_data_is_refused(tmp_path):
    raw = tiny_raw()
    raw["evaluation"]["external"] = [{"name": "same", "source": raw["data"]["source"]}]
    with pytest.raises(DataError, match="shares .* image\\(s\\) with the training data"):
        run(load_config(raw), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "external, path",
    [
        ({"name": "test", "source": EXTERNAL}, "evaluation.external[0].name"),
        ({"name": "b", "source": {"type": "nosuch"}}, "evaluation.external[0].source"),
        ({"name": "b"}, "evaluation.external[0].source"),
    ],
)
def test_bad_external_sets_name_their_yaml_path(tmp_path, capsys, external, path):
    raw = tiny_raw()
    raw["evaluation"]["external"] = [external]
    config = write_yaml(tmp_path / "bad.yaml", raw)
    assert main(["validate", str(config)]) == 2
    assert path in capsys.readouterr().err


def test_evaluate_refuses_bad_inputs_clearly(tmp_path, capsys):
    data = write_yaml(tmp_path / "d.yaml", {"name": "b", "source": EXTERNAL})
    assert (
        main(["evaluate", "--checkpoint", str(tmp_path / "none.safetensors"), "--data", str(data)])
        == 2
    )
    assert "none.safetensors" in capsys.readouterr().err
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x80\x04 pickle-ish bytes")
    assert main(["evaluate", "--checkpoint", str(fake), "--data", str(data)]) == 2
    assert "not a readable mtlkit weights file" in " ".join(capsys.readouterr().err.split())
