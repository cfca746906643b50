"""The configuration reference (docs/config.md), generated from the config's models and
every registered component's options model.

The text depends only on the models and the registries (sorted by name), never on the
machine, so the committed file can be checked against a fresh one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from mtlkit.components.registry import KIND_TITLES, Entry
from mtlkit.config.fields import KeyDoc, model_keys, summary
from mtlkit.config.schema import ComponentSlot, RunConfig

if TYPE_CHECKING:
    from mtlkit.components.host import PluginHost

REGENERATE = "mtl config reference --builtin > docs/config.md"
"""The command that writes the committed reference (built-in plugins only)."""

BUILTIN_DISTRIBUTION = "mtlkit"

_HEADER = """\
# Configuration reference

<!-- Generated from the config's pydantic models and the registered plugins' options:
do not edit. Regenerate with `{regenerate}`; tests/test_config_reference.py checks it. -->

Every key of a run configuration (`mtl run CONFIG`), with its type, default, allowed
values and meaning. A key written nowhere keeps its default; `mtl config show CONFIG`
prints a config with every default filled in, and `mtl config schema` the JSON schema
that editors use for completion.

A key of type **component** is a mapping whose `type` picks a registered component
and whose other keys are that component's options; a bare name is shorthand for
`{{type: name}}`. `training.optimizer` and `training.scheduler` are picked by `name`
instead, and a mapping without `name` keeps the default one. Each kind of component,
where the config takes it, every registered one and its options are listed under
[Components](#components).
"""


def config_reference(host: PluginHost, distributions: Iterable[str] | None = None) -> str:
    """The Markdown reference of the config and of the components of ``host``'s
    registries; with ``distributions``, only components whose plugin came from one of
    them (``["mtlkit"]``: the built-in ones)."""
    wanted = set(distributions) if distributions is not None else None
    slots: dict[str, list[tuple[str, ComponentSlot]]] = {}
    lines = [_HEADER.format(regenerate=REGENERATE)]
    lines += _model_sections(RunConfig, "", 1, slots, {}, title="Top level")
    lines += ["## Components", ""]
    for kind, registry in host.registries.items():
        if kind not in slots and kind not in _LISTED_KINDS:
            continue  # not configured in a run (commands)
        entries = [
            e for e in registry if wanted is None or host.owner_distribution(e.owner) in wanted
        ]
        lines += _kind_section(kind, entries, slots.get(kind, []), host)
    return "\n".join(lines).rstrip() + "\n"


_LISTED_KINDS = {"metric": "`evaluation.metrics` (by name; `evaluation.select` too)"}
"""Kinds named in the config by a plain name, not through a component slot."""


def _model_sections(
    model: type[BaseModel],
    path: str,
    level: int,
    slots: dict[str, list[tuple[str, ComponentSlot]]],
    documented: dict[type[BaseModel], str],
    title: str | None = None,
    note: str = "",
) -> list[str]:
    """A heading and table for ``model`` at YAML path ``path``, then one section per
    nested model not ``documented`` yet (model -> the path of its section); records the
    component slots met (kind -> paths) in ``slots``."""
    keys = model_keys(model)
    nested = _nested_paths(keys, path, documented)
    lines = [f"{'#' * max(level, 2)} {title or f'`{path}`'}", ""]
    lines += [text for text in (summary(model.__doc__), note) if text]
    lines += [""] if lines[-1] else []
    lines += _table(keys, nested)
    for key in keys:
        if key.slot is not None:
            where = _item_path(path, key)
            slots.setdefault(key.slot.kind, []).append((where, key.slot))
            _core_key_slots(key.slot, where, slots)
    for target, (child, names) in _sections_to_write(keys, nested, documented).items():
        note = f"Each of {', '.join(f'`{n}`' for n in names)}." if len(names) > 1 else ""
        documented[child] = target
        sub_level = min(level + 1, 4)
        lines += _model_sections(child, target, sub_level, slots, documented, note=note)
    return lines


def _item_path(path: str, key: KeyDoc) -> str:
    """The YAML path of a key's value, ``[]`` marking the items of a list."""
    return _join(path, key.key) + ("[]" if key.type.startswith("list") else "")


def _nested_paths(
    keys: list[KeyDoc], path: str, documented: dict[type[BaseModel], str]
) -> dict[str, str]:
    """Where the keys of each nested model are listed, by key: an earlier section of the
    same model, one section for siblings of one model (``ultrasound.<key>``), or its own."""
    by_model: dict[type[BaseModel], list[KeyDoc]] = {}
    for key in keys:
        if key.model is not None and key.slot is None:
            by_model.setdefault(key.model, []).append(key)
    paths = {}
    for model, siblings in by_model.items():
        if model in documented:
            target = documented[model]
        elif len(siblings) > 1:
            target = _join(path, "<key>")
        else:
            target = _item_path(path, siblings[0])
        paths.update({key.key: target for key in siblings})
    return paths


def _sections_to_write(
    keys: list[KeyDoc], nested: dict[str, str], documented: dict[type[BaseModel], str]
) -> dict[str, tuple[type[BaseModel], list[str]]]:
    """The sections of nested models not documented before: path -> (model, keys)."""
    sections: dict[str, tuple[type[BaseModel], list[str]]] = {}
    for key in keys:
        if key.key in nested and key.model not in documented:
            sections.setdefault(nested[key.key], (key.model, []))[1].append(key.key)
    return sections


def _core_key_slots(
    slot: ComponentSlot, where: str, slots: dict[str, list[tuple[str, ComponentSlot]]]
) -> None:
    """The slots inside a slot's core keys (a head's ``loss``)."""
    for key in model_keys(slot.core_keys) if slot.core_keys else []:
        if key.slot is not None:
            slots.setdefault(key.slot.kind, []).append((f"{where}.{key.key}", key.slot))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _table(
    keys: list[KeyDoc], nested: dict[str, str], first: list[list[str]] | None = None
) -> list[str]:
    """A Markdown table of ``keys``; ``nested``: where each nested model's keys are."""
    rows = [["key", "type", "default", "allowed", "description"], ["---"] * 5]
    rows += first or []
    for key in keys:
        description = key.description
        if key.key in nested:
            description = f"{description} (keys: `{nested[key.key]}`)".lstrip()
        rows.append(
            [
                f"`{key.key}`",
                key.type,
                _code(key.default),
                key.allowed,
                description,
            ]
        )
    return ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows] + [""]


def _code(text: str) -> str:
    return text if text in ("required", "(below)") else f"`{text}`"


def _cell(text: str) -> str:
    # A pipe ends a Markdown table cell, in code spans too.
    return text.replace("|", "\\|").replace("\n", " ")


def _kind_section(
    kind: str, entries: list[Entry], where: list[tuple[str, ComponentSlot]], host: PluginHost
) -> list[str]:
    title = KIND_TITLES.get(kind, kind)
    lines = [f"### {title[0].upper()}{title[1:]}", ""]
    paths = [f"`{path}`" for path, _ in where] or [_LISTED_KINDS.get(kind, "")]
    lines += [f"Configured at {', '.join(p for p in paths if p)}.", ""]
    slot = where[0][1] if where else None
    if slot is not None and slot.default:
        lines += [f"Without `{slot.key}`: `{slot.default}`.", ""]
    if slot is not None and slot.core_keys is not None:
        lines += ["Every one also takes these keys, which the core handles:", ""]
        lines += _table(model_keys(slot.core_keys), {})
    if not entries:
        lines += ["(none registered)", ""]
    for entry in entries:
        lines += _entry_section(entry, slot, host)
    return lines


def _entry_section(entry: Entry, slot: ComponentSlot | None, host: PluginHost) -> list[str]:
    distribution = host.owner_distribution(entry.owner) or "in-process"
    lines = [f"#### `{entry.name}`", ""]
    about = f"Plugin `{entry.owner}` (distribution `{distribution}`)."
    if entry.description:
        about = f"{entry.description.rstrip('.')}. {about}"
    lines += [about, ""]
    if slot is None:
        return lines
    selector = [
        [
            f"`{slot.key}`",
            "str",
            "required" if slot.default != entry.name else f"`{entry.name}`",
            f"`{entry.name}`",
            "selects this component",
        ]
    ]
    if entry.options is None:
        lines += _table([], {}, first=selector)
        return lines + ["Takes no options.", ""]
    documented: dict[type[BaseModel], str] = {}
    keys = model_keys(entry.options)
    lines += _table(keys, _nested_paths(keys, entry.name, documented), first=selector)
    for target, (child, _) in _sections_to_write(
        keys, _nested_paths(keys, entry.name, documented), documented
    ).items():
        documented[child] = target
        lines += _model_sections(child, target, 5, {}, documented)
    return lines
