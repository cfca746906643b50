"""The third-party example plugin in examples/ works when registered like an installed one."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_raw

from mtlkit import Engine, load_config
from mtlkit.testing import check_metric, check_weighting

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mtlkit-example-plugin"


@pytest.fixture
def example_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import mtlkit_example_plugin

    yield mtlkit_example_plugin
    sys.modules.pop("mtlkit_example_plugin", None)


def test_example_declares_its_entry_point():
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["mtlkit"] == {"example": "mtlkit_example_plugin"}


def test_brier_score(example_plugin):
    y = np.array([1, 0, 1])
    p = np.array([0.8, 0.1, 0.4])
    assert example_plugin.brier(y, p, 0.5) == pytest.approx((0.04 + 0.01 + 0.36) / 3)


def test_run_with_revised_uncertainty_weighting_and_brier_metric(example_plugin):
    raw = tiny_raw(weighting="revised_uncertainty")
    raw["evaluation"]["metrics"] = [*raw["evaluation"]["metrics"], "brier"]
    engine = Engine(load_config(raw), plugins=[example_plugin])
    registry = engine.host.weightings
    assert registry.get("revised_uncertainty").owner == "mtlkit_example_plugin"
    engine.fit()
    learned = engine.weighting.log_variance.detach().numpy()
    assert not np.allclose(learned, 0.0), "the task weights should be learned"
    assert np.allclose(engine.components.build_weighting().log_variance.detach().numpy(), 0.0)
    brier = engine.evaluate("test").tasks["bm"]["brier"]
    assert 0 <= brier <= 1 and not math.isnan(brier)


def test_example_components_pass_the_conformance_kit(example_plugin):
    # What the example's own tests would do: mtlkit.testing against the contracts.
    check_metric(example_plugin.brier)
    weighting = check_weighting(example_plugin.RevisedUncertaintyWeighting, {}, ["bm", "alnm"])
    assert weighting.log_variance.shape == (2,)
