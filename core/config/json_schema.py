"""The JSON schema of a run configuration, for editors' completion and checking of YAML
(``mtl config schema``; e.g. yaml-language-server in VS Code).

The base schema (pydantic's) has every component slot as a free mapping. With a plugin
host, each slot becomes the union of its registered components, told apart by their
``type`` (``name``) constant, so that an editor knows every component's own keys.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.errors import PydanticUserError

from mtlkit.config.fields import component_slots
from mtlkit.config.schema import COMPONENT_MARK, ComponentSlot, RunConfig

if TYPE_CHECKING:
    from mtlkit.components.host import PluginHost
    from mtlkit.components.registry import Entry

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_SLOT_TYPES = ("anyOf", "type", "additionalProperties")
"""The keys of pydantic's free-mapping schema of a slot, replaced by the union."""


def config_json_schema(host: PluginHost | None = None) -> dict[str, Any]:
    """The JSON schema of :class:`RunConfig`; with ``host``, every component slot lists
    the registered components and their options."""
    schema = RunConfig.model_json_schema()
    if host is not None:
        definitions = schema.setdefault("$defs", {})
        _expand(schema, _Context(host, component_slots(RunConfig), definitions))
        for name in sorted(definitions):
            definitions[name] = definitions.pop(name)
    return {"$schema": DIALECT, "title": "mtlkit run configuration", **schema}


@dataclass
class _Context:
    host: PluginHost
    slots: dict[str, ComponentSlot]
    """Each kind's slot (its key, default and core keys), from the models."""
    definitions: dict[str, Any]
    """The schema's ``$defs``, which the components' own definitions join."""


def _expand(node: Any, context: _Context) -> None:
    """Replace every marked slot under ``node`` by the union of its components."""
    if isinstance(node, list):
        for item in node:
            _expand(item, context)
        return
    if not isinstance(node, dict):
        return
    for value in list(node.values()):
        _expand(value, context)
    mark = node.get(COMPONENT_MARK)
    if isinstance(mark, dict) and "anyOf" in node and mark.get("kind") in context.slots:
        for key in _SLOT_TYPES:
            node.pop(key, None)
        node["anyOf"] = _union(context.slots[mark["kind"]], context)


def _union(slot: ComponentSlot, context: _Context) -> list[dict[str, Any]]:
    """A bare component name, or one mapping per registered component."""
    registry = context.host.registries[slot.kind]
    core_keys = _options_schema(slot.core_keys, f"{slot.kind}.core.", context)
    return [
        {
            "type": "string",
            "enum": registry.names(),
            "description": f"a name alone: shorthand for {{{slot.key}: NAME}}",
        },
        {"oneOf": [_branch(entry, slot, core_keys, context) for entry in registry]},
    ]


def _branch(
    entry: Entry, slot: ComponentSlot, core_keys: dict[str, Any], context: _Context
) -> dict[str, Any]:
    """One component's mapping: its ``key`` constant, its options and the core's keys."""
    key = slot.key
    options = _options_schema(entry.options, f"{entry.kind}.{entry.name}.", context)
    properties = {
        key: {"const": entry.name, "description": entry.description or entry.name},
        **options.get("properties", {}),
        **copy.deepcopy(core_keys.get("properties", {})),
    }
    _expand(properties, context)
    required = [] if entry.name == slot.default else [key]
    required += options.get("required", [])
    branch = {
        "title": f"{entry.name} ({entry.owner})",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": options.get("additionalProperties", False),
    }
    if entry.description:
        branch["description"] = entry.description
    return branch


def _options_schema(
    model: type[BaseModel] | None, prefix: str, context: _Context
) -> dict[str, Any]:
    """The JSON schema of an options model, its definitions (slots expanded) moved into
    the schema's under ``prefix`` (two plugins may both call a model ``Options``)."""
    if model is None:
        return {"properties": {}, "additionalProperties": False}
    try:
        schema = model.model_json_schema(ref_template=f"#/$defs/{prefix}{{model}}")
    except PydanticUserError:  # an option type with no JSON form: the keys stay free
        return {"additionalProperties": True}
    for name, definition in schema.pop("$defs", {}).items():
        _expand(definition, context)
        context.definitions[prefix + name] = definition
    return schema
