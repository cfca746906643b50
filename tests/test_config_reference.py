"""docs/config.md: generated from the models and the registries, in sync with them, and
naming every key of every model with a meaning."""

from __future__ import annotations

import re
import typing

import pytest
from conftest import ROOT
from pydantic import BaseModel

from mtlkit.components.host import PluginHost
from mtlkit.components.registry import KIND_TITLES
from mtlkit.config.reference import BUILTIN_DISTRIBUTION, REGENERATE, config_reference
from mtlkit.config.schema import HeadCoreKeys, RunConfig, SourceCoreKeys

DOC = ROOT / "docs" / "config.md"


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


@pytest.fixture(scope="module")
def reference(host) -> str:
    return config_reference(host, [BUILTIN_DISTRIBUTION])


def models_in(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model its fields hold, found from the annotations alone."""
    found: list[type[BaseModel]] = []

    def visit(annotation) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                for field in annotation.model_fields.values():
                    visit(field.annotation)
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(model)
    return found


def rows(text: str) -> dict[str, list[str]]:
    """The table rows of a Markdown text: key -> its cells."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"\| `([^`]+)` \| (.*) \|$", line)
        if match:
            found.setdefault(match.group(1), re.split(r"(?<!\\)\|", match.group(2)))
    return found


def sections(text: str, level: int) -> dict[str, str]:
    """Heading text -> the text up to the next heading of that level or above."""
    parts = re.split(rf"^(#{{1,{level}}} .*)$", text, flags=re.M)
    return {
        parts[i].lstrip("#").strip(): parts[i + 1]
        for i in range(1, len(parts), 2)
        if parts[i].startswith("#" * level + " ")
    }


def test_the_committed_reference_is_up_to_date(reference):
    committed = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
    assert committed == reference, (
        f"docs/config.md is out of date with the config models or the plugins; "
        f"regenerate it: .venv/bin/{REGENERATE}"
    )


def test_the_reference_is_deterministic_and_machine_free(host, reference):
    assert config_reference(host, [BUILTIN_DISTRIBUTION]) == reference
    assert not re.search(r"0x[0-9a-f]{6,}", reference)  # no object addresses
    assert str(ROOT) not in reference and "/home/" not in reference and "/tmp/" not in reference


def test_every_key_of_every_config_model_is_documented_with_a_meaning(reference):
    documented = rows(reference)
    for model in [*models_in(RunConfig), HeadCoreKeys, SourceCoreKeys]:
        for name, field in model.model_fields.items():
            assert name in documented, f"{model.__name__}.{name} is missing from the reference"
            assert field.description, f"{model.__name__}.{name} has no description"
        tables = [
            set(rows(body))
            for body in [*sections(reference, 2).values(), *sections(reference, 4).values()]
        ]
        assert any(set(model.model_fields) <= keys for keys in tables), (
            f"no table lists every key of {model.__name__}"
        )


def test_every_component_has_a_section_with_all_its_options(host, reference):
    components = sections(reference, 2)["Components"]
    kinds = sections(components, 3)
    checked = 0
    for kind, registry in host.registries.items():
        if kind == "command":
            continue
        title = KIND_TITLES[kind]
        body = kinds[f"{title[0].upper()}{title[1:]}"]
        entries = sections(body, 4)
        for entry in registry:
            section = entries[f"`{entry.name}`"]
            assert f"Plugin `{entry.owner}`" in section
            for model in models_in(entry.options) if entry.options else []:
                table = rows(section)
                for name in model.model_fields:
                    assert name in table, f"{kind} {entry.name}: option {name} not documented"
                    description = table[name][-1].strip()
                    assert description, f"{kind} {entry.name}: option {name} has no description"
            checked += 1
    assert checked > 30


def test_table_cells_escape_pipes_and_show_types_defaults_and_ranges(reference):
    split = rows(sections(reference, 3)["`data.split`"])
    assert [c.strip() for c in split["test_fraction"][:3]] == ["float", "`0.3`", "> 0, < 1"]
    assert split["folds"][0].strip() == r"int \| null"
    assert split["stratify"][0].strip() == r"str \| list[str]"  # the one-name shorthand
    roi = rows(sections(reference, 3)["`data.roi`"])
    assert roi["mode"][2].strip() == "box, mask, image, auto"


def test_a_component_kind_lists_its_config_keys_and_core_keys(reference):
    components = sections(reference, 2)["Components"]
    heads = sections(components, 3)["Task heads"]
    assert "Configured at `heads[]`." in heads
    assert "| `loss` |" in heads  # the key the core handles for every head
    sources = sections(components, 3)["Data sources"]
    assert "`data.source`, `evaluation.external[].source`" in sources
    assert "| `columns` |" in sources
    optimizers = sections(components, 3)["Optimizers"]
    assert "Without `name`: `adam`." in optimizers


def test_in_process_plugins_appear_unless_only_builtin_ones_are_asked_for():
    from pydantic import Field

    from mtlkit import OptionsModel, hookimpl

    class ToyOptions(OptionsModel):
        depth: int = Field(3, ge=1, description="layers of the toy")

    def toy(options):
        """A toy backbone."""

    class Plugin:
        name = "toy_plugin"

        @hookimpl
        def mtl_register_backbones(self, registry):
            registry.register("toy", toy, options=ToyOptions)

    host = PluginHost([Plugin()])
    everything = config_reference(host)
    assert "#### `toy`" in everything and "distribution `in-process`" in everything
    assert rows(everything)["depth"][3].strip() == "layers of the toy"
    assert "#### `toy`" not in config_reference(host, [BUILTIN_DISTRIBUTION])


def test_mtl_config_reference_prints_or_writes_it(tmp_path, capsys, reference):
    from mtlkit.cli import main

    assert main(["config", "reference", "--builtin"]) == 0
    assert capsys.readouterr().out == reference
    out = tmp_path / "config.md"
    assert main(["config", "reference", "--builtin", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == reference
