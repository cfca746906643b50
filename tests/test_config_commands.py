"""``mtl config schema`` and ``mtl config show``: the JSON schema validates the shipped
configs and knows each component's options; the shown config has every default filled
in and loads back to the same config."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from conftest import QUICK, ROOT, install_example, write_yaml
from test_shipped_configs import EXAMPLE_PLUGINS

from mtlkit.cli import main
from mtlkit.components.filled import filled_config
from mtlkit.components.host import PluginHost
from mtlkit.config.defaults import written_out
from mtlkit.config.json_schema import config_json_schema
from mtlkit.config.loading import load_config
from mtlkit.config.schema import SplitConfig

try:  # a full JSON-schema validator when installed (not a dependency); a structural check always
    import jsonschema
except ImportError:
    jsonschema = None

SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


@pytest.fixture(scope="module")
def schema(host) -> dict[str, Any]:
    return config_json_schema(host)


TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
    "null": type(None),
}


CHECKERS = ["structural", *(["jsonschema"] if jsonschema is not None else [])]


@pytest.fixture(params=CHECKERS)
def problems(request):
    """``problems(schema, value)``: jsonschema's errors, or the structural walk's."""
    if request.param == "jsonschema":
        return lambda schema, value: [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft202012Validator(schema).iter_errors(value)
        ]
    return schema_problems


def schema_problems(schema: dict[str, Any], value: Any, node: Any = None, path: str = "") -> list:
    """Where ``value`` breaks ``schema``, by a structural walk (types, ranges, unknown and
    required keys, enums and constants, each component's branch picked by its
    ``type``/``name`` constant): a check that needs no jsonschema package."""
    node = resolved(schema, schema if node is None else node)
    alternatives = node.get("anyOf") or node.get("oneOf")
    if alternatives:
        fitting = [alt for alt in alternatives if fits(schema, alt, value)]
        if not fitting:
            return [f"{path}: no alternative fits"]
        results = [schema_problems(schema, value, alt, path) for alt in fitting]
        return [] if any(not r for r in results) else min(results, key=len)
    kind = node.get("type")
    if kind and not isinstance(value, TYPES[kind]):
        return [f"{path}: expected {kind}"]
    if "const" in node and value != node["const"]:
        return [f"{path}: expected {node['const']!r}"]
    if "enum" in node and value not in node["enum"]:
        return [f"{path}: not one of {node['enum']}"]
    problems = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, outside in (
            ("minimum", lambda bound: value < bound),
            ("exclusiveMinimum", lambda bound: value <= bound),
            ("maximum", lambda bound: value > bound),
            ("exclusiveMaximum", lambda bound: value >= bound),
        ):
            if key in node and outside(node[key]):
                problems.append(f"{path}: {key} {node[key]}")
    if isinstance(value, dict):
        properties = node.get("properties", {})
        problems += [f"{path}.{k}: required" for k in node.get("required", []) if k not in value]
        for key, item in value.items():
            if key in properties:
                problems += schema_problems(schema, item, properties[key], f"{path}.{key}")
            elif node.get("additionalProperties") is False:
                problems.append(f"{path}.{key}: unknown key")
    if isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            problems += schema_problems(schema, item, node["items"], f"{path}[{index}]")
    return problems


def resolved(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    return schema["$defs"][node["$ref"].removeprefix("#/$defs/")] if "$ref" in node else node


def fits(schema: dict[str, Any], node: dict[str, Any], value: Any) -> bool:
    """Whether an alternative is meant for ``value``: its type, and the constants of its
    properties (a component's ``type``) that ``value`` gives."""
    node = resolved(schema, node)
    if "type" in node and not isinstance(value, TYPES[node["type"]]):
        return False
    if isinstance(value, dict):
        properties = node.get("properties", {})
        return all(
            value[key] == properties[key]["const"]
            for key in value
            if key in properties and "const" in properties[key]
        )
    return True


def test_the_schema_is_a_valid_json_schema(schema):
    json.dumps(schema)  # plain JSON
    assert schema["$schema"].startswith("https://json-schema.org/")
    if jsonschema is not None:
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates_against_the_schema(
    schema, path, problems, tmp_path, monkeypatch
):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if path.name in EXAMPLE_PLUGINS:  # its schema knows the example plugin's components
        site = install_example(EXAMPLE_PLUGINS[path.name], tmp_path / "site")
        if site is not None:
            monkeypatch.syspath_prepend(str(site))
        schema = config_json_schema(PluginHost())
    assert problems(schema, raw) == []
    assert problems(config_json_schema(), raw) == []  # the base schema too


def test_the_schema_knows_each_components_options(schema, problems):
    raw = yaml.safe_load(QUICK.read_text(encoding="utf-8"))
    assert problems(schema, raw) == []
    misspelt = {**raw, "heads": ["bm", {"type": "alnm_burden", "min_node": 2}]}
    assert any("min_node" in p for p in problems(schema, misspelt))
    unknown = {**raw, "backbone": {"type": "vgg"}}
    assert problems(schema, unknown)
    out_of_range = {**raw, "training": {"optimizer": {"name": "sgd", "momentum": 1.5}}}
    assert problems(schema, out_of_range)
    loss = {**raw, "heads": [{"type": "bm", "loss": {"type": "bce", "pos_weight": 2.0}}]}
    assert problems(schema, loss) == []
    bad_loss = {**raw, "heads": [{"type": "bm", "loss": {"type": "bce", "weight": 2.0}}]}
    assert problems(schema, bad_loss)
    # a mapping without `name` tunes the default optimizer, adam (no momentum)
    assert problems(schema, {**raw, "training": {"optimizer": {"lr": 0.01}}}) == []
    assert problems(schema, {**raw, "training": {"optimizer": {"momentum": 0.5}}})
    # the base schema leaves a component's keys free
    assert problems(config_json_schema(), misspelt) == []


def test_mtl_config_schema_prints_or_writes_the_schema(tmp_path, capsys, schema):
    assert main(["config", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema
    out = tmp_path / "mtlkit.schema.json"
    assert main(["config", "schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == schema
    assert main(["config", "schema", "--base"]) == 0
    assert json.loads(capsys.readouterr().out) == config_json_schema()


@pytest.mark.parametrize("command", [["schema"], ["reference"], ["show", str(QUICK)]])
def test_an_existing_out_file_is_kept_unless_forced(tmp_path, capsys, command):
    out = tmp_path / "mine.yaml"
    out.write_text("# my commented config\n", encoding="utf-8")
    assert main(["config", *command, "--out", str(out)]) == 2
    assert "already exists" in " ".join(capsys.readouterr().err.split())
    assert out.read_text(encoding="utf-8") == "# my commented config\n"
    assert main(["config", *command, "--out", str(out), "--force"]) == 0
    assert out.read_text(encoding="utf-8") != "# my commented config\n"


def test_config_show_fills_in_defaults_not_written_in_the_file(capsys):
    assert main(["config", "show", str(QUICK)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    written = yaml.safe_load(QUICK.read_text(encoding="utf-8"))
    assert "duplicates" not in written["data"] and "num_workers" not in written["training"]
    assert shown["data"]["duplicates"] == {
        "detect": True,
        "method": "dhash",
        "hash_size": 16,
        "max_distance": 60,
    }
    assert shown["training"]["num_workers"] == 0
    assert shown["training"]["optimizer"] == {"name": "adam", "lr": 0.001, "weight_decay": 0.0}
    assert shown["backbone"]["drop_path_rate"] == 0.0  # a component's own default
    assert shown["heads"][0]["type"] == "bm" and shown["heads"][0]["positive"] == ["malignant", 1]
    assert shown["heads"][2]["name"] == "alnm_ge2"  # derived by the head's options model
    assert shown["heads"][0]["loss"] == {
        "type": "bce",
        "pos_weight": None,
        "label_smoothing": 0.0,
    }  # the default loss
    assert shown["data"]["source"]["columns"] == {}  # a key the core handles for every source
    assert shown["evaluation"]["statistics"]["bootstrap_resamples"] == 2000


def test_the_shown_config_loads_back_to_the_same_config(tmp_path, host, capsys):
    assert main(["config", "show", str(QUICK)]) == 0
    text = capsys.readouterr().out
    again = write_yaml(tmp_path / "shown.yaml", yaml.safe_load(text))
    original = load_config(QUICK)
    reloaded = load_config(again)
    assert filled_config(reloaded, host) == filled_config(original, host)
    assert reloaded.data.split == original.data.split
    assert reloaded.training.augmentation == original.training.augmentation
    assert reloaded.evaluation == original.evaluation
    assert main(["config", "show", str(again)]) == 0
    assert capsys.readouterr().out == text


def test_config_show_takes_overrides_like_mtl_run(capsys):
    args = ["config", "show", str(QUICK), "--set", "training.epochs=3"]
    assert main([*args, "--set", "heads[0].dropout=0.25", "--set", "heads[1].loss=bce"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["training"]["epochs"] == 3
    assert shown["heads"][0]["dropout"] == 0.25
    assert shown["heads"][1]["loss"] == {"type": "bce", "pos_weight": None, "label_smoothing": 0.0}


def test_config_show_refuses_a_bad_config_as_mtl_validate_does(tmp_path, capsys):
    raw = yaml.safe_load(QUICK.read_text(encoding="utf-8"))
    raw["heads"][0] = {"type": "bm", "treshold": 0.4}
    raw["training"]["optimizer"] = {"name": "adamm"}
    bad = write_yaml(tmp_path / "bad.yaml", raw)
    assert main(["config", "show", str(bad)]) == 2
    shown = capsys.readouterr()
    assert main(["validate", str(bad)]) == 2
    validated = capsys.readouterr()
    assert shown.err == validated.err and shown.out == ""
    assert "heads[0].treshold" in shown.err and "did you mean 'adam'" in shown.err
    assert "Traceback" not in shown.err


def test_written_out_leaves_out_defaults_a_model_refuses_when_written():
    split = SplitConfig(folds=5)
    data = written_out(split)
    assert "test_fraction" not in data  # with folds, a written test_fraction is an error
    assert data["val_fraction"] == 0.15 and data["stratify"] == ["bm"]
    assert SplitConfig.model_validate(data) == split
    assert written_out(SplitConfig()) == {
        "test_fraction": 0.3,
        "val_fraction": 0.15,
        "stratify": ["bm"],
        "seed": 0,
        "file": None,
        "folds": None,
    }


def test_config_show_of_components_whose_options_refuse_some_defaults(tmp_path, host):
    raw = yaml.safe_load(QUICK.read_text(encoding="utf-8"))
    raw["data"]["source"] = {"type": "dicom", "root": str(tmp_path)}  # no labels CSV
    raw["data"]["split"] = {"folds": 3, "stratify": "bm"}
    raw["baselines"] = [{"type": "radiomics", "bin_count": 32}]
    config = load_config(raw)
    try:
        shown = filled_config(config, host)
    except Exception as exc:  # the radiomics extra may be missing: then the config is refused
        pytest.skip(f"radiomics baseline unavailable here: {exc}")
    source = shown["data"]["source"]
    assert source["type"] == "dicom" and "image_column" not in source  # needs labels
    assert source["frames"] == "middle"
    assert "bin_width" not in shown["baselines"][0] and shown["baselines"][0]["bin_count"] == 32
    assert "test_fraction" not in shown["data"]["split"]
    assert filled_config(load_config(shown), host) == shown
