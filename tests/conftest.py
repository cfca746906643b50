"""Shared helpers: a tiny, CPU-sized run configuration and small comparison utilities."""

from __future__ import annotations

import atexit
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import configuration as hypothesis_configuration

# Hypothesis keeps its example database and caches in ./.hypothesis by default; keep the
# source tree clean and every run independent.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="mtlkit-tests-hypothesis-")
hypothesis_configuration.set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "quick.yaml"
VENV_BIN = Path(sys.executable).parent
MTL = VENV_BIN / "mtl"

TASKS = ["bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"]
METRICS = ["acc", "se", "sp", "precision", "f1", "auc"]

_QUICK_RAW: dict[str, Any] | None = None


def install_example(folder: str, site: Path) -> Path | None:
    """Make ``site`` hold what ``pip install examples/<folder>`` leaves: the example's package
    and its dist-info with the entry points its pyproject.toml declares, so that mtlkit
    finds it as it finds an installed plugin once ``site`` is on the path. Returns ``site``,
    or None when the example is installed in this environment already."""
    import importlib.metadata

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    source = ROOT / "examples" / folder
    project = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    try:
        importlib.metadata.distribution(project["name"])
        return None
    except importlib.metadata.PackageNotFoundError:
        pass
    entry_points = project["entry-points"]["mtlkit"]
    for module in {target.split(":")[0].split(".")[0] for target in entry_points.values()}:
        shutil.copytree(source / module, site / module)
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[mtlkit]\n{lines}")
    return site


def tiny_raw(**overrides: Any) -> dict[str, Any]:
    """configs/quick.yaml shrunk to seconds on a CPU; a fresh deep copy on every call.

    Synthetic source with 24 patients of 32-pixel images, 32-pixel RoIs, timm resnet10t
    without pretrained weights, 2 epochs of batch 16 on the CPU with one torch thread (two
    threads on a 2-core machine that is busy with anything else run 5-10x slower). Keyword
    arguments replace top-level keys.
    """
    global _QUICK_RAW
    if _QUICK_RAW is None:
        _QUICK_RAW = yaml.safe_load(QUICK.read_text(encoding="utf-8"))
    raw = copy.deepcopy(_QUICK_RAW)
    raw["name"] = "tiny"
    raw["data"]["source"] = {"type": "synthetic", "patients": 24, "image_size": 32, "seed": 0}
    raw["data"]["image_size"] = 32
    raw["backbone"] = {"type": "timm", "model": "resnet10t", "pretrained": False, "in_chans": 1}
    raw["training"]["epochs"] = 2
    raw["training"]["batch_size"] = 16
    raw["training"]["device"] = "cpu"
    raw["training"]["threads"] = 1
    # The Grad-CAM gallery and report.html add seconds to every run; their own tests
    # (test_gradcam.py, test_report.py, test_report_browser.py) switch them on.
    raw["reports"] = ["summary", "markdown"]
    raw.update(copy.deepcopy(overrides))
    return raw


CRAFTED_RUN_NAME = "</title><script>alert(1)</script>"


@pytest.fixture(scope="session")
def reported_run(tmp_path_factory) -> Path:
    """One tiny run with every report (summary, markdown, gradcam, html), named to break
    out of the HTML title; shared by the report tests, which must not change it."""
    from mtlkit import load_config, run

    out = tmp_path_factory.mktemp("reported") / "run"
    raw = tiny_raw(name=CRAFTED_RUN_NAME, reports=["summary", "markdown", "gradcam", "html"])
    run(load_config(raw), out_dir=out)
    return out


@pytest.fixture
def tiny_config(tmp_path: Path) -> dict[str, Any]:
    """A tiny run configuration as a plain dict (modify freely); outputs go under tmp_path."""
    raw = tiny_raw()
    raw["output_dir"] = str(tmp_path / "runs" / "{name}-{timestamp}")
    return raw


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def canonical_json(value: Any) -> str:
    """A text form in which NaN equals NaN, for exact comparisons of metric dicts."""
    return json.dumps(value, sort_keys=True, allow_nan=True, default=_plain)


def _plain(value: Any) -> Any:
    try:
        return value.tolist()
    except AttributeError:
        return str(value)


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def run_mtl(
    *args: str, cwd: Path | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """Run the installed ``mtl`` console script in a subprocess."""
    env = dict(os.environ)
    env.pop("MTLKIT_DISABLE_PLUGINS", None)
    env.setdefault("PYTHONHASHSEED", "0")
    return subprocess.run(
        [str(MTL), *args],
        cwd=str(cwd or ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
