"""The plugins a run used are recorded (environment.json, checkpoint metadata), and a
checkpoint whose plugin is missing names what to install."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_raw, write_yaml

from mtlkit import PluginError, TaskHead, hookimpl, load_config, run
from mtlkit.components.host import PluginHost
from mtlkit.components.usage import missing_plugins
from mtlkit.evaluation.external import evaluate_checkpoint
from mtlkit.training.checkpoint import read_metadata


class SizeHead(TaskHead):
    """Large lesion: a third-party head read from the phantoms' ``alnm_count`` column."""

    def __init__(self):
        super().__init__("many_nodes")

    @property
    def label_columns(self):
        return ("alnm_count",)

    def target(self, labels):
        value = labels.get("alnm_count")
        return float("nan") if value in (None, "") else float(float(value) >= 1)


class SizePlugin:
    name = "size_plugin"

    @hookimpl
    def mtl_register_heads(self, registry):
        registry.register("many_nodes", SizeHead)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    raw = tiny_raw(name="prov", heads=["bm", "many_nodes"], constraints=[])
    raw["training"]["epochs"] = 1
    raw["data"]["split"]["stratify"] = ["bm"]
    raw["evaluation"]["reference_columns"] = {"bm": "oracle_bm"}
    out = tmp_path_factory.mktemp("prov") / "run"
    run(load_config(raw), out_dir=out, plugins=[SizePlugin()])
    return out


def test_environment_and_checkpoint_record_the_plugins_used(finished):
    recorded = json.loads((finished / "environment.json").read_text())["plugins"]
    by_name = {(r["kind"], r["name"]): r for r in recorded}
    head = by_name[("head", "many_nodes")]
    assert head["plugin"] == "size_plugin" and head["distribution"] is None
    bm = by_name[("head", "bm")]
    assert (bm["plugin"], bm["distribution"]) == ("mtlkit.heads", "mtlkit")
    assert bm["version"]
    assert ("backbone", "timm") in by_name and ("metric", "auc") in by_name
    assert ("task_loss", "bce") in by_name and ("data_source", "synthetic") in by_name
    meta = read_metadata(finished / "checkpoints" / "best.safetensors")
    assert meta["plugins"] == recorded


def test_evaluating_a_checkpoint_whose_plugin_is_missing_names_it(finished, tmp_path):
    data = write_yaml(
        tmp_path / "ext.yaml",
        {"name": "ext", "source": {"type": "synthetic", "patients": 6, "image_size": 32}},
    )
    with pytest.raises(PluginError) as info:
        evaluate_checkpoint(finished / "checkpoints" / "best.safetensors", data, device="cpu")
    message = str(info.value)
    assert "head 'many_nodes' came from plugin 'size_plugin'" in message
    assert "registered in-process" in message
    # with the plugin it evaluates
    outcome = evaluate_checkpoint(
        finished / "checkpoints" / "best.safetensors",
        data,
        device="cpu",
        host=PluginHost([SizePlugin()]),
    )
    assert "many_nodes" in outcome.metrics["sets"]["ext"]["tasks"]


def test_a_missing_distribution_is_named_with_the_install_command():
    recorded = [
        {"kind": "head", "name": "bm", "plugin": "mtlkit.heads", "distribution": "mtlkit"},
        {
            "kind": "head",
            "name": "subtype",
            "plugin": "subtype",
            "distribution": "mtlkit-subtype",
            "version": "0.3",
        },
    ]
    (problem,) = missing_plugins(recorded, PluginHost())
    assert "head 'subtype' came from plugin 'subtype'" in problem
    assert "pip install 'mtlkit-subtype==0.3'" in problem
