"""An installed plugin that fails to import: reported by name and distribution and skipped,
so that `mtl plugins` and runs that do not need it still work (tox's behaviour)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import MTL, tiny_raw, write_yaml


@pytest.fixture
def broken_distribution(tmp_path: Path) -> dict[str, str]:
    """An environment in which a distribution ``mtlkit-broken`` is installed whose plugin
    module raises on import (a dist-info folder on PYTHONPATH, as pip would leave it)."""
    site = tmp_path / "site"
    info = site / "mtlkit_broken-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtlkit-broken\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[mtlkit]\nbroken_subtype = mtlkit_broken_mod\n")
    (site / "mtlkit_broken_mod.py").write_text("import numpy_that_is_not_installed\n")
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS="200")
    env.pop("MTLKIT_DISABLE_PLUGINS", None)
    return env


def mtl(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MTL), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_mtl_plugins_still_works_and_lists_the_failure(broken_distribution, tmp_path):
    done = mtl(broken_distribution, "plugins", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "hierarchical_hinge" in done.stdout  # the built-in plugins are listed
    assert "failed to import" in done.stdout
    assert "broken_subtype" in done.stdout and "mtlkit-broken" in done.stdout
    assert "ModuleNotFoundError" in done.stdout
    assert "broken_subtype" in done.stderr  # and a warning says so


def test_a_config_that_does_not_need_it_validates(broken_distribution, tmp_path):
    config = write_yaml(tmp_path / "tiny.yaml", tiny_raw())
    done = mtl(broken_distribution, "validate", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout


def test_a_config_that_needs_a_missing_component_names_the_broken_plugin(
    broken_distribution, tmp_path
):
    raw = tiny_raw()
    raw["heads"].append({"type": "subtype"})
    config = write_yaml(tmp_path / "needs.yaml", raw)
    done = mtl(broken_distribution, "validate", str(config), cwd=tmp_path)
    assert done.returncode == 2
    err = " ".join(done.stderr.split())
    assert "unknown head 'subtype'" in err
    assert "broken_subtype" in err and "mtlkit-broken" in err
    assert "Traceback" not in done.stderr
