"""Every config in configs/ validates with the built-in plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtlkit import load_config
from mtlkit.components import resolve_components
from mtlkit.pluginhost import PluginHost

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    config = load_config(path)
    components = resolve_components(config, PluginHost())
    assert components.task_names


def test_paper_config_is_the_papers_recipe():
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper.yaml")
    assert config.backbone["type"] == "resnet50"
    assert config.data.image_size == 256
    assert config.data.split.test_fraction == 0.3
    training = config.training
    assert (training.optimizer.name, training.optimizer.lr, training.epochs) == ("adam", 1e-4, 200)
    assert (training.scheduler.name, training.scheduler.step_size) == ("step", 50)
    assert training.scheduler.gamma == 0.1
    hinge = config.constraints[0]
    assert (hinge["margin"], hinge["weight"]) == (0.1, 0.05)
    assert len(config.seeds) == 5
