"""Reading a pydantic model's keys for people: each key's type, default, allowed values and
meaning, which keys hold nested models and which hold plugin components.

The config reference (:mod:`mtlkit.config.reference`) and ``mtl config show`` walk the
models with these functions, so a key added to a model appears in both without more code.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from mtlkit.config.schema import ComponentSlot


@dataclass(frozen=True)
class KeyDoc:
    """One key of a model, as the reference shows it."""

    key: str
    type: str
    default: str
    allowed: str
    description: str
    model: type[BaseModel] | None
    """The nested model whose keys the value holds (documented in its own table)."""
    slot: ComponentSlot | None
    """The component slot the key is, if it is one."""


def model_keys(model: type[BaseModel]) -> list[KeyDoc]:
    """Every key of ``model``, in declaration order."""
    return [
        field_doc(name, field, inherited_description(model, name))
        for name, field in model.model_fields.items()
    ]


def inherited_description(model: type[BaseModel], name: str) -> str:
    """The description of field ``name`` of ``model`` or, when a subclass redeclared the
    field only to change its default (``BMOptions.name = "bm"``), of its nearest base."""
    for cls in model.__mro__:
        fields = getattr(cls, "__pydantic_fields__", None) or {}
        if isinstance(cls, type) and issubclass(cls, BaseModel) and name in fields:
            if fields[name].description:
                return fields[name].description
    return ""


def field_doc(name: str, field: FieldInfo, description: str | None = None) -> KeyDoc:
    """How the reference describes one field (``description``: instead of the field's)."""
    nested = nested_model(field.annotation)
    slot = component_slot(field)
    description = description or field.description or ""
    if not description and nested is not None:
        description = summary(nested.__doc__)
    return KeyDoc(
        key=name,
        type="component" if _marked(field) else type_text(_input_type(field)),
        default=default_text(field),
        allowed=allowed_text(field),
        description=" ".join(description.split()),
        model=nested,
        slot=slot,
    )


def summary(doc: str | None) -> str:
    """The first paragraph of a docstring on one line, or ``""``."""
    paragraph = (doc or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def component_slot(field: FieldInfo) -> ComponentSlot | None:
    """The :class:`ComponentSlot` mark of a field, of its list items or of its non-null
    member (``loss: component(...) | None``), if any."""
    for item in field.metadata:
        if isinstance(item, ComponentSlot):
            return item
    return _slot_in(field.annotation)


def component_slots(model: type[BaseModel]) -> dict[str, ComponentSlot]:
    """Every component slot of ``model`` and of its nested models (the slots inside a
    slot's core keys too), by registry kind."""
    found: dict[str, ComponentSlot] = {}
    for field in model.model_fields.values():
        slot = component_slot(field)
        if slot is not None:
            found.setdefault(slot.kind, slot)
            if slot.core_keys is not None:
                found = {**component_slots(slot.core_keys), **found}
        nested = nested_model(field.annotation)
        if nested is not None:
            found = {**component_slots(nested), **found}
    return found


def _input_type(field: FieldInfo) -> Any:
    """What a field accepts: the input type its before-validator declares for a
    shorthand (``speckle: 0.3``, ``stratify: bm``), else its own type."""
    for item in field.metadata:
        accepted = getattr(item, "json_schema_input_type", PydanticUndefined)
        if isinstance(item, BeforeValidator) and accepted not in (PydanticUndefined, Any):
            return accepted
    return field.annotation


def _marked(field: FieldInfo) -> bool:
    """Whether the field itself (not its items) is marked as one component."""
    return any(isinstance(item, ComponentSlot) for item in field.metadata)


def _slot_in(annotation: Any) -> ComponentSlot | None:
    if typing.get_origin(annotation) is typing.Annotated:
        for item in annotation.__metadata__:
            if isinstance(item, ComponentSlot):
                return item
    for arg in typing.get_args(annotation):
        found = _slot_in(arg)
        if found is not None:
            return found
    return None


def is_list(annotation: Any) -> bool:
    """Whether a value of this type is a list (``list[X]``, ``list[X] | None``)."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) is list:
        return True
    return any(
        typing.get_origin(_unwrap(a)) is list for a in _union_members(annotation) if a is not None
    )


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (alone, in a list or as the non-null member), if any."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = nested_model(arg)
            if found is not None:
                return found
    return None


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(None if a is type(None) else a for a in typing.get_args(annotation))
    return (annotation,)


_NAMES = {bool: "bool", int: "int", float: "float", str: "str", Any: "any"}


def type_text(annotation: Any) -> str:
    """A short, readable type: ``float``, ``int | null``, ``list[str]``, ``mapping``,
    ``list[component]``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        if any(isinstance(item, ComponentSlot) for item in annotation.__metadata__):
            return "component"
        return type_text(typing.get_args(annotation)[0])
    if annotation in _NAMES:
        return _NAMES[annotation]
    if annotation is type(None) or annotation is None:
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if origin is Literal:
        return " | ".join(sorted({type_text(type(v)) for v in typing.get_args(annotation)}))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return f"list[{type_text(item)}]"
    if origin is tuple:
        return "[" + ", ".join(type_text(a) for a in typing.get_args(annotation)) + "]"
    if origin is dict:
        key, value = typing.get_args(annotation) or (Any, Any)
        return f"mapping[{type_text(key)}, {type_text(value)}]"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as YAML (``0.3``, ``[bm]``, ``null``), or ``required``."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(below)"
    return format_value(value)


def format_value(value: Any) -> str:
    """A value as one line of YAML flow style, as a config would write it."""
    plain = to_jsonable_python(value)
    text = yaml.safe_dump(plain, default_flow_style=True, width=math.inf, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def allowed_text(field: FieldInfo) -> str:
    """Allowed values (of a ``Literal``), a range (``ge``, ``lt``, ...), a length or a
    pattern, joined by ``; ``; ``""`` when any value of the type goes."""
    parts = []
    choices = _literal_values(field.annotation)
    if choices:
        parts.append(", ".join(format_value(v) for v in choices))
    bounds = []
    for item in _constraints(field):
        if isinstance(item, annotated_types.Ge):
            bounds.append(f">= {format_value(item.ge)}")
        elif isinstance(item, annotated_types.Gt):
            bounds.append(f"> {format_value(item.gt)}")
        elif isinstance(item, annotated_types.Le):
            bounds.append(f"<= {format_value(item.le)}")
        elif isinstance(item, annotated_types.Lt):
            bounds.append(f"< {format_value(item.lt)}")
        elif isinstance(item, annotated_types.MinLen):
            bounds.append(f"at least {item.min_length} long")
        elif isinstance(item, annotated_types.MaxLen):
            bounds.append(f"at most {item.max_length} long")
        elif getattr(item, "pattern", None):
            bounds.append(f"matches `{item.pattern}`")
    if bounds:
        parts.append(", ".join(bounds))
    return "; ".join(parts)


def _constraints(field: FieldInfo) -> list[Any]:
    found = list(field.metadata)
    annotation = field.annotation
    while typing.get_origin(annotation) is typing.Annotated:
        found += list(annotation.__metadata__)
        annotation = typing.get_args(annotation)[0]
    return found


def _literal_values(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    values: list[Any] = []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            values += _literal_values(arg)
        if values and type(None) in typing.get_args(annotation):
            values.append(None)
    return values
