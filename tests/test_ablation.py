"""``mtl ablate``: the paper's four variants on one split and seeds, the comparison table
with p-values, resuming a killed ablation, and refusing grids that cannot run."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_raw

from mtlkit import load_config
from mtlkit.cli import main
from mtlkit.components.host import PluginHost
from mtlkit.config.loading import dump_config, parse_yaml
from mtlkit.errors import ConfigError, UsageError
from mtlkit.runs.ablation import ablate, plan

VARIANTS = ["full", "single_bm", "single_alnm", "multitask"]  # the reference runs first


def config_raw() -> dict:
    raw = tiny_raw(name="ablation", seed=[0, 1])
    raw["training"]["epochs"] = 1
    raw["reports"] = []
    return raw


@pytest.fixture(scope="module")
def ablated(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation") / "whole"
    result = ablate(load_config(config_raw()), out_dir=out)
    return result


def test_every_variant_runs_on_the_same_split(ablated):
    assert list(ablated.document["variants"]) == VARIANTS
    assert ablated.document["reference"] == "full"
    test_images = {}
    for name in VARIANTS:
        splits = json.loads((ablated.out_dir / name / "splits.json").read_text())
        test_images[name] = sorted(splits["test"]["images"])
        assert (ablated.out_dir / name / "seed_1" / "metrics.json").is_file()
    assert all(images == test_images["full"] for images in test_images.values())


def test_variants_have_their_tasks_and_constraints(ablated):
    variants = ablated.document["variants"]
    assert list(variants["single_bm"]["metrics"]) == ["bm"]
    assert list(variants["single_alnm"]["metrics"]) == ["alnm"]
    assert len(variants["multitask"]["metrics"]) == len(variants["full"]["metrics"]) == 5
    configs = {n: load_config(ablated.out_dir / n / "config.yaml") for n in VARIANTS}
    assert configs["multitask"].constraints == [] and configs["single_bm"].constraints == []
    assert configs["full"].constraints != []
    # Consistency is measured without the constraint too: the paper's comparison.
    assert "alnm_without_bm" in variants["multitask"]["consistency"]
    assert variants["single_bm"]["consistency"] == {}


def test_every_variant_but_the_reference_gets_p_values(ablated):
    variants = ablated.document["variants"]
    auc = variants["full"]["metrics"]["bm"]["auc"]
    assert auc["test"] is None and len(auc["values"]) == 2
    for name in ("single_bm", "multitask"):
        row = variants[name]["metrics"]["bm"]["auc"]
        assert row["test"] == "paired t-test over runs"
        assert 0.0 <= row["p_value"] <= 1.0
    seeds = {
        name: json.loads((ablated.out_dir / name / "metrics.json").read_text())
        for name in ("full", "multitask")
    }
    for name in ("full", "multitask"):
        summary = seeds[name]["sets"]["test"]["tasks"]["alnm"]["auc"]
        assert variants[name]["metrics"]["alnm"]["auc"]["values"] == summary["values"]


def test_the_csv_has_a_row_per_variant_task_and_metric(ablated):
    rows = list(csv.DictReader(io.StringIO((ablated.out_dir / "ablation.csv").read_text())))
    auc_rows = {(r["variant"], r["task"]) for r in rows if r["metric"] == "auc"}
    assert ("single_bm", "bm") in auc_rows and ("single_alnm", "alnm") in auc_rows
    assert ("single_bm", "alnm") not in auc_rows
    assert all(r["runs"] == "2" for r in rows if r["metric"] == "auc")
    multitask_bm = next(
        r
        for r in rows
        if r["variant"] == "multitask" and r["task"] == "bm" and r["metric"] == "auc"
    )
    assert float(multitask_bm["p_value"]) >= 0 and multitask_bm["test"]


KILLER = r"""
import json, os, signal, sys
from pathlib import Path
import mtlkit.training.fit as fit
from mtlkit import load_config
from mtlkit.components.host import PluginHost
from mtlkit.config.loading import dump_config, parse_yaml
from mtlkit.runs.ablation import ablate, plan

raw, out, after = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
step = fit.train_step
def killing(*args):
    if (Path(out) / after).is_file():  # the first training step after that file is written
        os.kill(os.getpid(), signal.SIGKILL)
    return step(*args)
fit.train_step = killing
ablate(load_config(raw), out_dir=out)
raise SystemExit("the ablation was not killed")
"""


def test_a_killed_ablation_resumes_to_the_same_table(ablated, tmp_path):
    out = tmp_path / "killed"
    # Killed while single_bm trains its second seed: full is finished, single_bm half.
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            json.dumps(config_raw()),
            str(out),
            "single_bm/seed_0/metrics.json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "full" / "metrics.json").is_file()
    assert not (out / "single_bm" / "metrics.json").exists()
    assert main(["resume", str(out), "--quiet"]) == 0  # mtl resume knows an ablation
    assert (out / "ablation.json").read_bytes() == (ablated.out_dir / "ablation.json").read_bytes()
    assert (out / "ablation.csv").read_bytes() == (ablated.out_dir / "ablation.csv").read_bytes()


def test_resume_refuses_another_config(ablated, tmp_path):
    other = config_raw()
    other["training"]["epochs"] = 2
    with pytest.raises(UsageError, match="another config"):
        ablate(load_config(other), out_dir=ablated.out_dir, resume=True)


def test_a_declared_grid_replaces_the_paper_grid(tmp_path):
    raw = config_raw()
    raw["seed"] = 0
    raw["ablation"] = {
        "variants": [
            {"name": "hinge"},
            {"name": "no_constraint", "set": ["constraints=[]"]},
            {
                "name": "bm_alnm",
                "tasks": ["bm", "alnm"],
                "set": ["constraints[0].pairs=[[bm, alnm]]"],
            },
            {"name": "dwa", "set": ["weighting=dwa"]},  # weightings are grid items too
        ],
        "reference": "hinge",
    }
    raw["reports"] = ["html", "markdown"]
    result = ablate(load_config(raw), out_dir=tmp_path / "grid")
    variants = result.document["variants"]
    assert list(variants) == ["hinge", "no_constraint", "bm_alnm", "dwa"]
    assert list(variants["bm_alnm"]["metrics"]) == ["bm", "alnm"]
    # One run each: the AUC is compared by the paired DeLong test on the same images, the
    # thresholded metrics by the paired bootstrap over patients.
    row = variants["no_constraint"]["metrics"]["bm"]["auc"]
    assert row["test"] == "paired DeLong" and 0.0 <= row["p_value"] <= 1.0
    row = variants["no_constraint"]["metrics"]["bm"]["acc"]
    assert row["test"] == "paired bootstrap over patients" and 0.0 < row["p_value"] <= 1.0
    assert variants["hinge"]["metrics"]["bm"]["auc"]["test"] is None
    assert load_config(tmp_path / "grid" / "dwa" / "config.yaml").weighting["type"] == "dwa"
    # The reference's report gains the ablation table and draws the others beside it.
    page = (tmp_path / "grid" / "hinge" / "report.html").read_text()
    assert 'id="ablation"' in page and "no_constraint" in page and "bm_alnm" in page
    assert 'id="ablation"' not in (tmp_path / "grid" / "bm_alnm" / "report.html").read_text()
    markdown = (tmp_path / "grid" / "hinge" / "report.md").read_text()
    assert "## Ablation (test)" in markdown and "| no\\_constraint |" in markdown


def test_grids_that_cannot_run_are_refused_before_anything_is_written(tmp_path):
    raw = config_raw()
    raw["ablation"] = {
        "variants": [
            {"name": "a", "tasks": ["bm", "nodes"]},
            {"name": "b", "set": ["training.epochs=0"]},
        ]
    }
    with pytest.raises(ConfigError) as info:
        ablate(load_config(raw), out_dir=tmp_path / "bad")
    text = str(info.value)
    assert "ablation.variants[0]" in text and "'nodes'" in text
    assert "ablation.variants[1]" in text and "epochs" in text
    assert not (tmp_path / "bad").exists()
    only_bm = config_raw()
    only_bm["heads"] = ["bm"]
    only_bm["constraints"] = []
    only_bm["data"]["split"]["stratify"] = ["bm"]
    only_bm["evaluation"]["reference_columns"] = {}
    with pytest.raises(UsageError, match="needs the tasks bm and alnm"):
        ablate(load_config(only_bm), out_dir=tmp_path / "bad")
    with pytest.raises(ConfigError, match="variant names repeat"):
        load_config({**config_raw(), "ablation": {"variants": [{"name": "a"}, {"name": "a"}]}})


def test_variants_of_a_k_fold_config_with_baselines_and_external_sets_plan(tmp_path):
    raw = config_raw()
    raw["data"]["split"] = {"folds": 3, "val_fraction": 0.15, "stratify": ["bm"]}
    raw["baselines"] = [{"type": "radiomics"}]
    raw["evaluation"]["external"] = [{"name": "other", "source": raw["data"]["source"]}]
    config = load_config(raw)
    reference, configs = plan(config, tmp_path / "out", PluginHost())
    assert reference == "full" and list(configs) == VARIANTS
    for name, derived in configs.items():
        # every variant survives the round trip through its config.yaml (mtl resume)
        assert load_config(parse_yaml(dump_config(derived))) == derived, name
        assert derived.data.split.folds == 3 and derived.evaluation.external
    assert configs["full"].baselines and configs["full"].data.split.file is None
    for name in VARIANTS[1:]:  # the others train on the reference's split, without baselines
        assert configs[name].baselines == []
        assert configs[name].data.split.file == str(
            (tmp_path / "out").resolve() / "full" / "splits.json"
        )


def test_a_reference_that_is_no_variant_is_refused(tmp_path):
    raw = config_raw()
    raw["ablation"] = {"reference": "fulll"}
    with pytest.raises(ConfigError, match="'fulll' is not a variant"):
        ablate(load_config(raw), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
