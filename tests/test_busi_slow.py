"""Real data: the data check and one short training run on ../shared/data/busi (marker
`slow`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mtlkit import load_config, run
from mtlkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED_BUSI = ROOT.parent / "shared" / "data" / "busi"
CONFLICT = ["images/benign_0433.png", "images/malignant_0145.png"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_BUSI.is_dir(), reason="../shared/data/busi is not present"),
]


def test_busi_data_check(capsys):
    root = f"data.source.root={SHARED_BUSI}"
    code = main(["data", "check", str(ROOT / "configs" / "busi.yaml"), "--set", root, "--quiet"])
    text = " ".join(capsys.readouterr().out.split())
    assert code == 0, text
    assert "645 images" in text and "2 excluded by data.exclude" in text
    assert "near-duplicate pair(s)" in text and "no problems found" in text
    # without the exclusion, the pixel-identical benign/malignant pair is a contradiction
    code = main(
        [
            "data",
            "check",
            str(ROOT / "configs" / "busi.yaml"),
            "--set",
            root,
            "--set",
            "data.exclude=[]",
            "--quiet",
        ]
    )
    text = " ".join(capsys.readouterr().out.split())
    assert code == 2
    assert f"image {CONFLICT[0]} and image {CONFLICT[1]} are the same image" in text


def test_busi_config_trains_one_short_epoch(tmp_path):
    overrides = [
        f"data.source.root={SHARED_BUSI}",
        "training.epochs=1",
        "data.image_size=64",
        "backbone.model=resnet10t",
        "training.device=cpu",
    ]
    run(load_config(ROOT / "configs" / "busi.yaml", overrides), out_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["sets"]["test"]
    assert test["tasks"]["bm"]["n"] == test["n_images"] > 150  # ~30% of 645 images
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    where = {image: name for name in ("train", "val", "test") for image in splits[name]["images"]}
    assert not set(CONFLICT) & set(where)
    # every reference near-duplicate pair of the shipped list stays inside one split
    with (SHARED_BUSI / "near_duplicates.csv").open() as handle:
        pairs = [(r["image_a"], r["image_b"]) for r in csv.DictReader(handle)]
    kept = [(a, b) for a, b in pairs if a in where and b in where]
    assert len(kept) > 150
    assert all(where[a] == where[b] for a, b in kept)


def test_busi_radiomics_baseline_on_the_cnns_split(tmp_path):
    pytest.importorskip("radiomics", reason="the radiomics extra")
    from mtlkit import Engine, to_json

    fast = (
        "baselines=[{type: radiomics, cache_dir: "
        + str(tmp_path / "cache")
        + ", boruta: {max_iter: 20}, forest: {n_estimators: 50}}]"
    )
    overrides = [f"data.source.root={SHARED_BUSI}", fast]
    out = tmp_path / "run"
    code = main(
        ["radiomics", str(ROOT / "configs" / "busi.yaml"), "--out", str(out), "--quiet"]
        + [arg for o in overrides for arg in ("--set", o)]
    )
    assert code == 0
    extraction = json.loads((out / "radiomics" / "extraction.json").read_text())
    assert (extraction["images"], extraction["features"], extraction["failed"]) == (645, 93, 0)
    cnn_split = Engine(load_config(ROOT / "configs" / "busi.yaml", overrides)).data.split_file()
    assert (out / "splits.json").read_text() == to_json(cnn_split)
    metrics = json.loads((out / "radiomics" / "metrics.json").read_text())
    assert metrics["sets"]["test"]["n_images"] == 188
    assert metrics["sets"]["test"]["tasks"]["bm"]["auc"] > 0.75
