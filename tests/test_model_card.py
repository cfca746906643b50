"""The model card: made from a run's files, it names the tasks, the metrics with the
intervals of metrics.json and the caveats the files imply; ``mtl report`` makes it again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_raw

from mtlkit import load_config, run
from mtlkit.cli import main
from mtlkit.plugins.model_card import model_card
from mtlkit.plugins.reports import format_value, markdown_text
from mtlkit.plugins.run_files import read_run

TASKS = ["bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("card")
    out = {}
    for name, seeds in (("one", 0), ("two", [0, 1])):
        raw = tiny_raw(name=f"card-{name}", seed=seeds, reports=["model_card"])
        out[name] = folder / name
        run(load_config(raw), out_dir=out[name])
    return out


def card_of(folder: Path) -> str:
    return (folder / "model_card.md").read_text(encoding="utf-8")


def row(card: str, section: str, task: str) -> list[str]:
    """The cells of ``task``'s row in the metrics table of ``section`` (``### test: ...``)."""
    part = card.split(f"### {section}:", 1)[1].split("###", 1)[0]
    line = next(x for x in part.splitlines() if x.startswith(f"| {markdown_text(task)} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def header(card: str, section: str) -> list[str]:
    part = card.split(f"### {section}:", 1)[1]
    line = next(x for x in part.splitlines() if x.startswith("| task |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_card_names_the_tasks_intended_use_and_the_synthetic_caveat(runs):
    card = card_of(runs["one"])
    assert "Research use only" in card and "not a medical device" in card
    tasks_table = card.split("## Tasks", 1)[1].split("##", 1)[0]
    for task in TASKS:
        assert f"| {markdown_text(task)} | binary |" in tasks_table
    assert "alnm\\_burden (min\\_nodes: 2)" in tasks_table
    assert "**Synthetic data.**" in card and "not clinically meaningful" in card
    assert "**No external validation.**" in card and "**One seed.**" in card
    assert "**Small test set**" in card  # 7 test patients


def test_a_single_runs_card_shows_its_auc_intervals_from_metrics_json(runs):
    card = card_of(runs["one"])
    metrics = json.loads((runs["one"] / "metrics.json").read_text())
    columns = header(card, "test")
    for task in TASKS:
        numbers = metrics["sets"]["test"]["tasks"][task]
        cells = dict(zip(columns, row(card, "test", task), strict=True))
        low, high = numbers["auc_ci_delong"]
        assert cells["AUC"].startswith(f"{numbers['auc']:.3f} (DeLong {low:.3f}, {high:.3f}")
        if all(v is not None for v in numbers["auc_ci_bootstrap"]):
            b_low, b_high = numbers["auc_ci_bootstrap"]
            assert f"bootstrap {b_low:.3f}, {b_high:.3f})" in cells["AUC"]
        assert cells["SP"] == format_value(numbers["sp"])
    split = json.loads((runs["one"] / "environment.json").read_text())["data"]["splits"]["test"]
    assert f"| test | {split['images']} | {split['patients']} |" in card


def test_repeated_runs_show_mean_sd_and_interval_of_metrics_json(runs):
    card = card_of(runs["two"])
    metrics = json.loads((runs["two"] / "metrics.json").read_text())
    assert "Mean ± SD over 2 runs" in card
    assert "**One seed.**" not in card
    for section in ("test", "val"):
        columns = header(card, section)
        for task in TASKS:
            summary = metrics["sets"][section]["tasks"][task]
            cells = dict(zip(columns, row(card, section, task), strict=True))
            for name, title in (("auc", "AUC"), ("acc", "ACC"), ("se", "SE")):
                assert cells[title] == markdown_text(format_value(summary[name])), (task, name)
    auc = metrics["sets"]["test"]["tasks"]["bm"]["auc"]
    if auc["sd"] is not None and auc["sd"] > 0:  # the cell holds the mean, the SD and the CI
        assert f"{auc['mean']:.3f} ± {auc['sd']:.3f} ({auc['ci95'][0]:.3f}" in card


def test_mtl_report_makes_the_same_card_again(runs, tmp_path):
    before = card_of(runs["one"])
    (runs["one"] / "model_card.md").unlink()
    assert main(["report", str(runs["one"])]) == 0
    assert card_of(runs["one"]) == before


def test_a_card_of_damaged_or_missing_files_still_says_what_it_can(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "config.yaml").write_text("name: [unclosed", encoding="utf-8")
    card = model_card(read_run(tmp_path))
    assert card.startswith("# Model card:") and "Research use only" in card
    assert "metrics.json is not valid JSON" in card


def test_hostile_names_cannot_inject_markdown(tmp_path, runs):
    metrics = json.loads((runs["one"] / "metrics.json").read_text())
    metrics["name"] = "<script>alert(1)</script> [x](http://evil) | cell"
    (tmp_path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    card = model_card(read_run(tmp_path))
    assert "<script>" not in card and "&lt;script&gt;" in card
    assert "\\[x\\](http" in card and "\\| cell" in card  # no link, no extra table cell


def test_a_dense_heads_pixel_threshold_is_the_one_it_trained_with(tmp_path):
    raw = tiny_raw(name="card-seg", reports=["model_card"])
    raw["heads"].append({"type": "segmentation", "width": 8, "threshold": 0.3})
    raw["training"]["epochs"] = 1
    run(load_config(raw), out_dir=tmp_path / "seg")
    tasks_table = card_of(tmp_path / "seg").split("## Tasks", 1)[1].split("##", 1)[0]
    line = next(x for x in tasks_table.splitlines() if x.startswith("| lesion |"))
    assert line.rstrip(" |").endswith("0.3 per pixel"), line
