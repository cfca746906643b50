"""Typed registries and the plugin host: owners, duplicates, unknown names, broken plugins."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import Field

import mtlkit.components.host as pluginhost
from mtlkit import ConfigError, PluginError, hookimpl
from mtlkit.components.host import PluginHost
from mtlkit.components.interfaces import TaskHead
from mtlkit.components.registry import Registry
from mtlkit.config.schema import OptionsModel
from mtlkit.errors import RegistryError


class ThresholdOptions(OptionsModel):
    name: str
    threshold: float = Field(0.5, gt=0, lt=1)


class ThresholdHead(TaskHead):
    """A test head with options."""

    Options = ThresholdOptions

    def __init__(self, options):
        super().__init__(options.name)

    def target(self, labels):  # registration requires it (mtlkit.components.contracts)
        return float("nan")


def no_options():
    """A component without options."""


@pytest.fixture
def registry() -> Registry:
    reg = Registry("head")
    reg.add("binary", ThresholdHead, owner="plugin_a")
    reg.add("multiclass", no_options, owner="plugin_b")
    return reg


# --- Registry -------------------------------------------------------------------------------


def test_duplicate_name_names_both_plugins(registry):
    with pytest.raises(RegistryError) as info:
        registry.add("binary", no_options, owner="plugin_c")
    message = str(info.value)
    assert "'binary'" in message
    assert "plugin_a" in message and "plugin_c" in message
    assert "MTLKIT_DISABLE_PLUGINS=plugin_c" in message
    assert registry.get("binary").owner == "plugin_a"  # the first registration is kept


def test_empty_name_is_refused(registry):
    with pytest.raises(RegistryError, match="plugin_x"):
        registry.add("  ", no_options, owner="plugin_x")


def test_unknown_name_lists_choices_and_closest_match(registry):
    with pytest.raises(RegistryError) as info:
        registry.get("binaryy")
    message = str(info.value)
    assert "choices: binary, multiclass" in message
    assert "did you mean 'binary'?" in message


def test_unknown_name_without_close_match_has_no_suggestion(registry):
    message = registry.unknown_message("zzz")
    assert "choices: binary, multiclass" in message
    assert "did you mean" not in message


def test_entry_records_owner_options_and_description(registry):
    entry = registry.get("binary")
    assert entry.owner == "plugin_a"
    assert entry.options is ThresholdOptions  # taken from obj.Options
    assert entry.description == "A test head with options."
    assert registry.get("multiclass").options is None
    assert registry.names() == ["binary", "multiclass"]
    assert "binary" in registry and "other" not in registry
    assert len(registry) == 2


def test_resolve_validates_options_with_the_entry_model(registry):
    entry, options = registry.resolve({"type": "binary", "name": "x", "threshold": 0.3}, "heads[1]")
    assert entry.name == "binary"
    assert isinstance(options, ThresholdOptions) and options.threshold == 0.3


@pytest.mark.parametrize(
    "spec, path, words",
    [
        ({"type": "binary", "name": "x", "threshold": "high"}, "heads[1].threshold", "number"),
        ({"type": "binary", "name": "x", "threshold": 2}, "heads[1].threshold", "less than 1"),
        ({"type": "binary", "name": "x", "treshold": 0.3}, "heads[1].treshold", "unknown key"),
        ({"type": "binary"}, "heads[1].name", "required"),
        ({"type": "binaryy"}, "heads[1].type", "did you mean 'binary'"),
        ({"name": "x"}, "heads[1].type", "missing; choices: binary, multiclass"),
        ("binary", "heads[1]", "expected a mapping"),
        ({"type": "multiclass", "colour": 1}, "heads[1]", "takes no options (got colour)"),
    ],
)
def test_resolve_errors_name_the_yaml_path(registry, spec, path, words):
    with pytest.raises(ConfigError) as info:
        registry.resolve(spec, "heads[1]")
    problems = dict(info.value.problems)
    assert path in problems, info.value.problems
    assert words in problems[path]
    assert path in str(info.value)


# --- PluginHost -----------------------------------------------------------------------------


def test_builtin_components_record_their_plugin_and_distribution():
    host = PluginHost()
    expected = {
        ("head", "bm"): "mtlkit.heads",
        ("head", "alnm_burden"): "mtlkit.heads",
        ("backbone", "timm"): "mtlkit.backbones",
        ("metric", "auc"): "mtlkit.metrics",
        ("constraint", "hierarchical_hinge"): "mtlkit.constraints",
        ("weighting", "equal"): "mtlkit.weighting",
        ("data_source", "synthetic"): "mtlkit.synthetic",
        ("report", "summary"): "mtlkit.reports",
        ("task_loss", "bce"): "mtlkit.task_losses",
        ("command", "data synth"): "mtlkit.synthetic",
    }
    for (kind, name), owner in expected.items():
        assert host.registries[kind].get(name).owner == owner, (kind, name)
        assert host.owner_distribution(owner) == "mtlkit"


class ExtraHead:
    """An in-process plugin adding one head."""

    def __init__(self, name: str, head: str = "extra_head"):
        self.name = name
        self.head = head

    @hookimpl
    def mtl_register_heads(self, registry):
        registry.register(self.head, ThresholdHead)


def test_in_process_plugin_is_owner_without_distribution():
    host = PluginHost([ExtraHead("my_plugin")])
    assert host.heads.get("extra_head").owner == "my_plugin"
    assert host.owner_distribution("my_plugin") is None
    assert host.heads.get("bm").owner == "mtlkit.heads"


def test_duplicate_component_across_plugins_names_both_in_registration_order():
    with pytest.raises(RegistryError) as info:
        PluginHost([ExtraHead("first_plugin", "dup"), ExtraHead("second_plugin", "dup")])
    message = str(info.value)
    assert message.index("first_plugin") < message.index("second_plugin")
    assert "MTLKIT_DISABLE_PLUGINS=second_plugin" in message


def test_in_process_plugin_clashing_with_a_builtin_name_is_an_error():
    with pytest.raises(RegistryError) as info:
        PluginHost([ExtraHead("shadow", "bm")])
    message = str(info.value)
    assert "'mtlkit.heads'" in message and "'shadow'" in message
    assert "MTLKIT_DISABLE_PLUGINS=shadow" in message


def test_two_plugins_with_one_name_is_a_plugin_error():
    with pytest.raises(PluginError, match="twin"):
        PluginHost([ExtraHead("twin", "a"), ExtraHead("twin", "b")])


def test_plugin_raising_during_registration_is_reported_by_name():
    class Exploding:
        name = "exploding_plugin"

        @hookimpl
        def mtl_register_metrics(self, registry):
            raise RuntimeError("kaboom")

    with pytest.raises(PluginError) as info:
        PluginHost([Exploding()])
    message = str(info.value)
    assert "exploding_plugin" in message
    assert "mtl_register_metrics" in message
    assert "RuntimeError: kaboom" in message


class FakeEntryPoint:
    """Just what the plugin host reads from an importlib.metadata.EntryPoint."""

    def __init__(self, name: str, dist: str, error: Exception | None = None, plugin=None):
        self.name = name
        self.dist = SimpleNamespace(name=dist)
        self.value = f"{dist}.plugin"
        self._error = error
        self._plugin = plugin
        self.loaded = 0

    def load(self):
        self.loaded += 1
        if self._error is not None:
            raise self._error
        return self._plugin


@pytest.fixture
def with_entry_point(monkeypatch):
    real = pluginhost._entry_points()

    def install(ep):
        monkeypatch.setattr(pluginhost, "_entry_points", lambda: [*real, ep])
        return ep

    return install


def test_broken_entry_point_is_skipped_and_reported_with_the_way_out(with_entry_point, monkeypatch):
    monkeypatch.delenv("MTLKIT_DISABLE_PLUGINS", raising=False)
    ep = with_entry_point(FakeEntryPoint("broken_thing", "broken-dist", ImportError("no numpy9")))
    host = PluginHost()  # does not raise: the other plugins still work
    assert ep.loaded == 1
    assert "bm" in host.heads
    (failure,) = host.failures
    assert (failure.name, failure.distribution) == ("broken_thing", "broken-dist")
    message = failure.message()
    assert "'broken_thing'" in message
    assert "broken-dist" in message
    assert "ImportError: no numpy9" in message
    assert "MTLKIT_DISABLE_PLUGINS=broken_thing" in message


def test_unknown_component_names_the_plugins_that_failed_to_import(with_entry_point, monkeypatch):
    monkeypatch.delenv("MTLKIT_DISABLE_PLUGINS", raising=False)
    with_entry_point(FakeEntryPoint("subtype_plugin", "mtlkit-subtype", ImportError("no torch9")))
    host = PluginHost()
    with pytest.raises(ConfigError) as info:
        host.heads.resolve({"type": "subtype"}, "heads[3]")
    message = dict(info.value.problems)["heads[3].type"]
    assert "unknown head 'subtype'" in message
    assert "subtype_plugin" in message and "mtlkit-subtype" in message


def test_disabled_entry_point_is_skipped_without_loading(with_entry_point, monkeypatch):
    ep = with_entry_point(FakeEntryPoint("broken_thing", "broken-dist", ImportError("x")))
    monkeypatch.setenv("MTLKIT_DISABLE_PLUGINS", "something_else, broken_thing")
    host = PluginHost()
    assert ep.loaded == 0
    assert "broken_thing" not in [p.name for p in host.plugins]
    assert host.disabled == {"something_else", "broken_thing"}
    assert "bm" in host.heads  # the other plugins still load


def test_working_third_party_entry_point_is_loaded_with_its_distribution(
    with_entry_point, monkeypatch
):
    monkeypatch.delenv("MTLKIT_DISABLE_PLUGINS", raising=False)
    with_entry_point(FakeEntryPoint("third", "third-dist", plugin=ExtraHead("ignored", "third_h")))
    host = PluginHost()
    assert host.heads.get("third_h").owner == "third"
    assert host.owner_distribution("third") == "third-dist"


def test_disabling_a_builtin_plugin_removes_its_components(monkeypatch):
    monkeypatch.setenv("MTLKIT_DISABLE_PLUGINS", "mtlkit.metrics")
    host = PluginHost()
    assert "auc" not in host.metrics
    assert "bm" in host.heads


def test_disabled_in_process_plugin_is_skipped(monkeypatch):
    monkeypatch.setenv("MTLKIT_DISABLE_PLUGINS", "my_plugin")
    host = PluginHost([ExtraHead("my_plugin")])
    assert "extra_head" not in host.heads


@pytest.mark.parametrize("bad_type", [["binary"], {"name": "binary"}])
def test_unhashable_type_value_is_a_config_error(registry, bad_type):
    with pytest.raises(ConfigError) as info:
        registry.resolve({"type": bad_type}, "heads[0]")
    assert "heads[0].type" in dict(info.value.problems)


@pytest.mark.parametrize("bad_type", [5, None, True])
def test_non_string_type_value_is_a_config_error(registry, bad_type):
    with pytest.raises(ConfigError) as info:
        registry.resolve({"type": bad_type}, "heads[0]")
    assert "heads[0].type" in dict(info.value.problems)
