"""Every config in configs/ validates with the built-in plugins (and the example plugin a
config is written for: configs/molecular_subtype.yaml needs examples/molecular_subtype)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import install_example

from mtlkit import load_config
from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import resolve_components

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


EXAMPLE_PLUGINS = {"molecular_subtype.yaml": "molecular_subtype"}
"""Config -> the folder under examples/ of the example plugin it needs."""


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path, tmp_path, monkeypatch):
    if path.name in EXAMPLE_PLUGINS:
        site = install_example(EXAMPLE_PLUGINS[path.name], tmp_path / "site")
        if site is not None:
            monkeypatch.syspath_prepend(str(site))
    config = load_config(path)
    components = resolve_components(config, PluginHost())
    assert components.task_names


def test_paper_config_is_the_papers_recipe():
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper.yaml")
    assert config.backbone["type"] == "resnet50"
    assert config.data.image_size == 256
    assert config.data.split.test_fraction == 0.3
    training = config.training
    assert (training.optimizer, training.epochs) == ({"name": "adam", "lr": 1e-4}, 200)
    assert training.scheduler == {"name": "step", "step_size": 50, "gamma": 0.1}
    hinge = config.constraints[0]
    assert (hinge["margin"], hinge["weight"]) == (0.1, 0.05)
    assert len(config.seeds) == 5


@pytest.mark.slow
def test_paper_recipe_trains_end_to_end_on_a_cpu(tmp_path):
    """configs/paper.yaml as shipped (ResNet50, step schedule, AMP flag, workers), shrunk."""
    import json

    from mtlkit import run

    overrides = [
        "seed=[0, 1]",
        "training.epochs=2",
        "training.num_workers=2",
        "data.source.patients=20",
        "data.source.image_size=64",
        "data.image_size=64",
        "training.batch_size=8",
    ]
    paper = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"
    result = run(load_config(paper, overrides), out_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1]
    assert set(metrics["sets"]["test"]["tasks"]) == set(result.task_names)
    assert (tmp_path / "run" / "seed_1" / "checkpoints" / "best.safetensors").is_file()
