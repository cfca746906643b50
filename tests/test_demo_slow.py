"""The demo config learns: a full `configs/quick.yaml` run (minutes; marker `slow`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtlkit import load_config, run

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"

pytestmark = pytest.mark.slow


def test_quick_config_learns_every_task(tmp_path):
    result = run(load_config(QUICK), out_dir=tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["sets"]["test"]["tasks"]
    assert set(test) == {"bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"}
    for task, metrics in test.items():
        # Far above chance, and below the generator's oracle (the best achievable AUC).
        assert metrics["auc"] > 0.7, (task, metrics)
        assert metrics["auc"] < metrics["reference_auc"] + 0.03, (task, metrics)
    assert result.metrics["best_epoch"] >= 1


def test_engine_api_example_runs():
    import subprocess
    import sys

    example = Path(__file__).resolve().parents[1] / "examples" / "engine_api.py"
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "best epoch" in done.stdout and "oracle" in done.stdout
