"""The hook specifications: documented, used, validated, and callable with fewer arguments."""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points

import pytest
from conftest import tiny_raw

from mtlkit import Engine, PluginError, hookimpl, load_config
from mtlkit.components import hookspecs
from mtlkit.components.host import PluginHost
from mtlkit.results import FitResult

# Hooks that no built-in plugin implements; the tests named here call them.
EXERCISED_HERE = {
    "mtl_fit_start": "test_training_events_are_called_in_order",
    "mtl_epoch_end": "test_training_events_are_called_in_order",
    "mtl_fit_end": "test_training_events_are_called_in_order",
}


def hook_specs() -> dict[str, object]:
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if name.startswith("mtl_") and inspect.isfunction(fn)
    }


def test_hooks_exist_and_registration_hooks_are_listed():
    specs = hook_specs()
    assert len(specs) >= 12
    registration = {n for n in specs if n.startswith("mtl_register_")}
    assert registration == set(hookspecs.REGISTRATION_HOOKS)


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_has_a_docstring(name):
    doc = inspect.getdoc(hook_specs()[name])
    assert doc and len(doc.split()) >= 4, f"{name} has no real docstring"


def test_every_hook_is_implemented_by_a_builtin_plugin_or_exercised_by_a_test():
    specs = set(hook_specs())
    implemented = set()
    for ep in entry_points(group="mtlkit"):
        if ep.dist is not None and ep.dist.name == "mtlkit":
            module = ep.load()
            implemented |= {name for name in specs if callable(getattr(module, name, None))}
    assert set(EXERCISED_HERE) <= specs, "EXERCISED_HERE names a hook that no longer exists"
    for test_name in set(EXERCISED_HERE.values()):
        assert callable(globals().get(test_name)), test_name
    orphans = specs - implemented - set(EXERCISED_HERE)
    assert not orphans, f"hooks no built-in plugin implements and no test calls: {orphans}"


class Recorder:
    """Implements every training event, each with a different subset of arguments."""

    name = "recorder"

    def __init__(self):
        self.calls: list[tuple] = []

    @hookimpl
    def mtl_fit_start(self, engine):
        self.calls.append(("start", engine))

    @hookimpl
    def mtl_epoch_end(self, epoch, logs):  # no `engine`: a subset of the hook's arguments
        self.calls.append(("epoch", epoch, logs))

    @hookimpl
    def mtl_fit_end(self, result):
        self.calls.append(("end", result))


class NoArguments:
    """Hook implementations that accept none of the hook's arguments."""

    name = "no_arguments"

    def __init__(self):
        self.counts = {"register": 0, "start": 0}

    @hookimpl
    def mtl_register_metrics(self):
        self.counts["register"] += 1

    @hookimpl
    def mtl_fit_start(self):
        self.counts["start"] += 1


def test_training_events_are_called_in_order():
    recorder, bare = Recorder(), NoArguments()
    raw = tiny_raw()
    raw["training"]["epochs"] = 2
    engine = Engine(load_config(raw), plugins=[recorder, bare])
    result = engine.fit()

    kinds = [call[0] for call in recorder.calls]
    assert kinds == ["start", "epoch", "epoch", "end"]
    assert recorder.calls[0][1] is engine
    assert [call[1] for call in recorder.calls if call[0] == "epoch"] == [1, 2]
    logs = recorder.calls[1][2]
    assert logs["epoch"] == 1 and "train_loss" in logs and "val_metrics" in logs
    assert isinstance(recorder.calls[-1][1], FitResult)
    assert recorder.calls[-1][1] is result
    assert bare.counts == {"register": 1, "start": 1}


def test_registration_hook_without_arguments_is_called_once():
    bare = NoArguments()
    host = PluginHost([bare])
    assert bare.counts["register"] == 1
    assert "no_arguments" in [p.name for p in host.plugins]


class Misspelled:
    name = "typo_plugin"

    @hookimpl
    def mtl_register_hedas(self, registry):  # meant: mtl_register_heads
        pass


def test_misspelled_hook_is_a_plugin_error_naming_the_plugin():
    with pytest.raises(PluginError) as info:
        PluginHost([Misspelled()])
    message = str(info.value)
    assert "typo_plugin" in message
    assert "mtl_register_hedas" in message


def test_hook_with_unknown_argument_is_a_plugin_error_naming_the_plugin():
    class WrongArgument:
        name = "wrong_argument"

        @hookimpl
        def mtl_register_heads(self, registry, colour):
            pass

    with pytest.raises(PluginError, match="wrong_argument"):
        PluginHost([WrongArgument()])


def test_the_plugin_authors_guide_names_every_hook():
    # docs/plugins.md is the guide to the hooks: a new hook must appear in it
    from conftest import ROOT

    import mtlkit.components.hookspecs as specs

    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    missing = [name for name in dir(specs) if name.startswith("mtl_") and name not in guide]
    assert not missing, f"docs/plugins.md does not name the hooks {missing}"
