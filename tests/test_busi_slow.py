"""Real data: one short training run on ../shared/data/busi (marker `slow`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtlkit import load_config, run

ROOT = Path(__file__).resolve().parents[1]
SHARED_BUSI = ROOT.parent / "shared" / "data" / "busi"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_BUSI.is_dir(), reason="../shared/data/busi is not present"),
]


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
    assert test["tasks"]["bm"]["n"] == test["n_images"] > 150  # ~30% of 647 images
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    # the one exact duplicate with conflicting labels stays inside one split
    where = {image: name for name in ("train", "val", "test") for image in splits[name]["images"]}
    assert where["images/benign_0433.png"] == where["images/malignant_0145.png"]
