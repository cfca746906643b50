"""The run's figures, the Grad-CAM gallery and report.html: made by every run, made again
identically by ``mtl report``, self-contained, escaped; ``mtl evaluate --out`` and
``mtl explain`` (files, folders, two runs side by side)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CRAFTED_RUN_NAME, write_yaml
from PIL import Image

from mtlkit.cli import main
from mtlkit.plugins.plots import roc_figure
from mtlkit.plugins.run_files import read_run

CRAFTED_IMAGE = "<img src=x onerror=alert(1)>.png"
FIGURES = [
    "roc_test",
    "confusion_test",
    "reliability_test",
    "inconsistency",
    "training",
    "cam_response",
]


@pytest.fixture
def run_copy(reported_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared run that a test may change."""
    copy = tmp_path / "run"
    shutil.copytree(reported_run, copy)
    return copy


class Outcome:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, " ".join(stderr.split())


def run_mtl(*args: str) -> Outcome:
    """``mtl ARGS`` in this process (the console script's imports cost seconds each)."""
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return Outcome(code, err.getvalue())


def images_in(page: str) -> list[str]:
    return re.findall(r"<img [^>]*src=\"([^\"]*)\"", page)


def test_every_run_writes_the_figures_the_gallery_and_the_report(reported_run):
    for name in FIGURES:
        for suffix in ("png", "svg"):
            assert (reported_run / "plots" / f"{name}.{suffix}").stat().st_size > 1000, name
    gallery = json.loads((reported_run / "cam" / "gallery.json").read_text())["images"]
    assert {item["task"] for item in gallery} == {"bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"}
    assert {item["group"] for item in gallery} <= {"TP", "FP", "FN", "TN"}
    cams = [np.load(reported_run / item["cam"]) for item in gallery]
    assert all(cam.shape == (32, 32) and np.isfinite(cam).all() for cam in cams)  # the RoI's
    assert sum(cam.std() > 1e-3 for cam in cams) > len(cams) // 2, "the trained CAMs are flat"
    response = json.loads((reported_run / "cam" / "response.json").read_text())
    for entry in response["tasks"].values():
        assert len(entry["centre"]["mean_cam"]) == 10
        assert set(entry["lesion"]["regions"]) == {"intratumoral", "peritumoral", "background"}


def test_report_is_self_contained_and_escapes_the_run_name(reported_run):
    page = (reported_run / "report.html").read_text(encoding="utf-8")
    sources = images_in(page)
    gallery = json.loads((reported_run / "cam" / "gallery.json").read_text())["images"]
    assert len(sources) == len(FIGURES) + len(gallery)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?://", page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert CRAFTED_RUN_NAME not in page
    assert (
        "<title>&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;: mtlkit report</title>" in page
    )
    for section in ("Summary", "Results", "Training", "Grad-CAM", "Configuration"):
        assert f"<h2>{section}</h2>" in page
    assert "External test sets" not in page and "Baselines" not in page  # none in this run
    assert "AUC 95% CI (DeLong)" in page and "resampling patients" in page


def test_mtl_report_makes_an_identical_report_from_the_files(reported_run, run_copy):
    for name in ["report.html", *(f"plots/{f}.png" for f in FIGURES)]:
        (run_copy / name).unlink()
    shutil.rmtree(run_copy / "checkpoints")  # without the model
    result = run_mtl("report", str(run_copy))
    assert result.returncode == 0, result.stderr
    assert (run_copy / "report.html").read_bytes() == (reported_run / "report.html").read_bytes()
    for name in FIGURES:
        for suffix in ("png", "svg"):
            path = f"plots/{name}.{suffix}"
            assert (run_copy / path).read_bytes() == (reported_run / path).read_bytes(), path


def test_crafted_image_names_are_shown_as_text(run_copy):
    gallery_file = run_copy / "cam" / "gallery.json"
    gallery = json.loads(gallery_file.read_text())
    gallery["images"][0]["image_id"] = CRAFTED_IMAGE
    gallery["images"][1]["png"] = "../../../../etc/passwd"  # not embedded: outside the run
    gallery_file.write_text(json.dumps(gallery))
    env = json.loads((run_copy / "environment.json").read_text())
    env["data"]["warnings"] = [f"near-duplicates {CRAFTED_IMAGE} and p1"]
    (run_copy / "environment.json").write_text(json.dumps(env))
    result = run_mtl("report", str(run_copy))
    assert result.returncode == 0, result.stderr
    page = (run_copy / "report.html").read_text(encoding="utf-8")
    assert CRAFTED_IMAGE not in page and "onerror=alert(1)>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in page
    assert len(images_in(page)) == len(FIGURES) + len(gallery["images"]) - 1


def test_baselines_and_other_models_appear_when_the_files_have_them(run_copy):
    predictions = run_copy / "predictions.csv"
    rows = list(csv.DictReader(io.StringIO(predictions.read_text())))
    for row in rows:
        row["radiomics.bm_prob"] = str(1 - float(row["bm_prob"]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    predictions.write_text(buffer.getvalue())
    figure = roc_figure(read_run(run_copy), "test", [])
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert len(legend) == 2 and legend[1].startswith("radiomics\nAUC")
    baseline = run_copy / "radiomics"
    baseline.mkdir()
    shutil.copy(run_copy / "metrics.json", baseline / "metrics.json")
    result = run_mtl("report", str(run_copy))
    assert result.returncode == 0, result.stderr
    page = (run_copy / "report.html").read_text(encoding="utf-8")
    assert "<h2>Baselines and compared models</h2><h3>radiomics</h3>" in page


def test_report_of_something_that_is_not_a_run_is_a_usage_error(tmp_path):
    result = run_mtl("report", str(tmp_path))
    assert result.returncode == 2
    assert "no readable metrics.json" in result.stderr


def test_evaluate_out_writes_a_report(reported_run, tmp_path):
    data = write_yaml(
        tmp_path / "ext.yaml",
        {
            "name": "hospital-b",
            "source": {"type": "synthetic", "patients": 6, "image_size": 32, "seed": 7},
        },
    )
    out = tmp_path / "ext"
    result = run_mtl(
        "evaluate",
        "--checkpoint",
        str(reported_run / "checkpoints" / "best.safetensors"),
        "--data",
        str(data),
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>External test sets</h2>" in page and "hospital-b set" in page
    assert (out / "plots" / "roc_hospital-b.png").is_file()


def test_explain_writes_heatmaps_cams_and_an_index(reported_run, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in (CRAFTED_IMAGE, "plain.png"):
        Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(folder / name)
    out = tmp_path / "explained"
    result = run_mtl(
        "explain",
        "--checkpoint",
        str(reported_run / "checkpoints" / "best.safetensors"),
        "--task",
        "bm",
        "--task",
        "alnm",
        "--out",
        str(out),
        str(folder),
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO((out / "index.csv").read_text())))
    assert len(rows) == 4 and {r["task"] for r in rows} == {"bm", "alnm"}
    assert CRAFTED_IMAGE in {r["image_id"] for r in rows}
    for row in rows:
        cam = np.load(out / row["cam"])
        assert cam.shape == (32, 32) and np.isfinite(cam).all()
        assert (out / row["heatmap"]).resolve().is_relative_to(out.resolve())
        assert Image.open(out / row["heatmap"]).size == (160, 160)
    bad = run_mtl(
        "explain",
        "--checkpoint",
        str(reported_run / "checkpoints" / "best.safetensors"),
        "--task",
        "nope",
        "--out",
        str(out),
        str(folder),
    )
    assert bad.returncode == 2 and "unknown task" in bad.stderr


def test_explain_compare_shows_two_runs_side_by_side(reported_run, run_copy, tmp_path):
    out = tmp_path / "compare"
    result = run_mtl(
        "explain",
        "--compare",
        str(reported_run),
        str(run_copy),
        "--task",
        "alnm",
        "--images",
        "3",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert (out / "compare_alnm.png").stat().st_size > 1000
    rows = list(csv.DictReader(io.StringIO((out / "compare.csv").read_text())))
    assert len(rows) == 6  # 2 models x 3 images


def test_explain_a_manifest_uses_the_training_roi(reported_run, tmp_path):
    data = tmp_path / "synth"
    assert (
        run_mtl(
            "data", "synth", "--out", str(data), "--patients", "3", "--image-size", "48"
        ).returncode
        == 0
    )
    out = tmp_path / "explained"
    checkpoint = str(reported_run / "checkpoints" / "best.safetensors")
    code = run_mtl(
        "explain",
        "--checkpoint",
        checkpoint,
        "--task",
        "bm",
        "--out",
        str(out),
        str(data / "manifest.csv"),
    )
    assert code.returncode == 0, code.stderr
    rows = list(csv.DictReader(io.StringIO((out / "index.csv").read_text())))
    manifest = list(csv.DictReader(io.StringIO((data / "manifest.csv").read_text())))
    assert len(rows) == len(manifest) and all(r["task"] == "bm" for r in rows)
    assert all(np.load(out / r["cam"]).shape == (32, 32) for r in rows)
