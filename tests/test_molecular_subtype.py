"""The third-party example examples/molecular_subtype, installed the way pip installs it (a
distribution with an ``mtlkit`` entry point on the path), checked with the conformance kit
and run end to end on the synthetic phantoms' subtype labels."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import MTL, ROOT, install_example, tiny_raw
from sklearn.metrics import roc_auc_score

from mtlkit import load_config, run
from mtlkit.components.host import PluginHost
from mtlkit.testing import check_head, check_metric

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

EXAMPLE = ROOT / "examples" / "molecular_subtype"
PACKAGE = EXAMPLE / "mtlkit_molecular_subtype"
CONFIG = ROOT / "configs" / "molecular_subtype.yaml"
MAX_LINES = 40
"""The aim: a new task with its metric in under 40 lines. Past it, improve the public API."""
SUBTYPE_AUC_BOUND = 0.65
"""Chance is 0.5. configs/molecular_subtype.yaml gave 0.736 (each subtype 0.67-0.82) on the
test split; the oracle reaches 0.98."""
SUBTYPES = ["luminal A", "luminal B", "HER2-enriched", "triple-negative"]


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The example installed for this test: PluginHost finds it through its entry point."""
    site = install_example("molecular_subtype", tmp_path / "site")
    if site is not None:
        monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("mtlkit_molecular_subtype", None)


def test_example_declares_its_entry_point():
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["entry-points"]["mtlkit"] == {"subtype": "mtlkit_molecular_subtype"}


def test_example_stays_short():
    # Lines that are not blank, docstrings included: what a plugin author has to write.
    lines = [
        line
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    assert 0 < len(lines) < MAX_LINES, f"{len(lines)} lines: keep the example under {MAX_LINES}"


def test_entry_point_registers_the_head_and_the_metric(installed):
    host = PluginHost()
    head, metric = host.heads.get("subtype"), host.metrics.get("ovr_auc")
    assert head.owner == metric.owner == "subtype"
    plugin = next(p for p in host.plugins if p.name == "subtype")
    assert plugin.distribution == "mtlkit-molecular-subtype"


def test_components_pass_the_conformance_kit(installed):
    from mtlkit_molecular_subtype import SubtypeHead, ovr_auc

    rows = [{"subtype": "Luminal A"}, {"subtype": "triple-negative"}, {"subtype": ""}, {}]
    head = check_head(SubtypeHead, {}, rows)
    assert (head.name, head.kind, head.classes) == ("subtype", "multiclass", SUBTYPES)
    targets = [head.target(row) for row in rows]
    assert targets[:2] == [0.0, 3.0] and all(math.isnan(t) for t in targets[2:])
    with pytest.raises(ValueError, match="not one of the classes"):
        head.target({"subtype": "basal-like"})
    check_metric(ovr_auc)


def test_ovr_auc_gives_each_class_its_one_vs_rest_auc(installed):
    from mtlkit_molecular_subtype import ovr_auc

    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 60)
    y_prob = rng.dirichlet(np.ones(4), 60) + 0.3 * np.eye(4)[y_true]
    expected = [roc_auc_score(y_true == c, y_prob[:, c]) for c in range(4)]
    assert ovr_auc(y_true, y_prob, 0.5) == pytest.approx(expected)
    assert ovr_auc(y_true == 1, y_prob[:, 1], 0.5) == pytest.approx(expected[1])


def test_tiny_run_records_the_per_class_auc(installed, tmp_path):
    raw = tiny_raw(heads=["bm", "alnm", "subtype"], constraints=[])
    raw["data"]["source"].update(patients=80, images_max=2)  # a few of every subtype
    raw["evaluation"]["metrics"] = [*raw["evaluation"]["metrics"], "ovr_auc"]
    raw["evaluation"]["reference_columns"] = {"bm": "oracle_bm"}
    run(load_config(raw), out_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    subtype = metrics["sets"]["test"]["tasks"]["subtype"]
    per_class = [subtype[f"ovr_auc[{name}]"] for name in SUBTYPES]
    defined = [v for v in per_class if v is not None]
    assert defined and all(0 <= v <= 1 for v in defined)
    assert subtype["ovr_auc"] == pytest.approx(np.mean(defined))
    assert "ovr_auc[luminal A]" not in metrics["sets"]["test"]["tasks"]["bm"]
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert "mtlkit-molecular-subtype" in json.dumps(environment["plugins"])


@pytest.mark.slow  # about two minutes of training on one CPU thread
def test_shipped_config_learns_the_subtype(tmp_path):
    """configs/molecular_subtype.yaml through ``mtl run``, the example installed for it."""
    site = install_example("molecular_subtype", tmp_path / "site")
    env = {**os.environ, **({"PYTHONPATH": str(site)} if site else {})}
    out = tmp_path / "run"
    done = subprocess.run(
        [str(MTL), "run", str(CONFIG), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "per class" in done.stdout and "triple-negative" in done.stdout
    subtype = json.loads((out / "metrics.json").read_text())["sets"]["test"]["tasks"]["subtype"]
    assert subtype["n"] > 50  # malignant, typed images only
    assert subtype["ovr_auc"] == pytest.approx(subtype["auc"])  # the same macro mean
    assert subtype["ovr_auc"] > SUBTYPE_AUC_BOUND, subtype
    assert all(subtype[f"ovr_auc[{name}]"] > 0.55 for name in SUBTYPES), subtype
