"""A validated model written out with its defaults: what ``mtl config show`` prints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python


def written_out(model: BaseModel) -> dict[str, Any]:
    """``model`` as a plain mapping (YAML-ready) with every default written out, nested
    models included, that still validates back to the same model.

    Values are written as validation makes them, so the result is stable when read back
    and written out again (a default of ``1`` for a float is written ``1.0``). A model
    whose validator tells a written key from a default (``test_fraction`` with ``folds``,
    ``bin_width`` with ``bin_count``) refuses some defaults written out; those are left
    out, so the result always reads back to ``model``.
    """
    fields = type(model).model_fields
    full = _values(model)
    again = _read_back(model, full)
    if again is not None:
        return _values(again)
    kept = {name: full[name] for name in fields if name in model.model_fields_set}
    for name in fields:
        if name not in kept and _read_back(model, {**kept, name: full[name]}) is not None:
            kept[name] = full[name]
    ordered = {name: kept[name] for name in fields if name in kept}
    again = _read_back(model, ordered)
    return {name: _values(again)[name] for name in ordered} if again is not None else ordered


def _values(model: BaseModel) -> dict[str, Any]:
    return {name: _plain(getattr(model, name)) for name in type(model).model_fields}


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return written_out(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return to_jsonable_python(value)


def _read_back(model: BaseModel, data: dict[str, Any]) -> BaseModel | None:
    """``data`` validated as ``model``'s type when that gives ``model`` again, else None."""
    try:
        again = type(model).model_validate(data)
    except ValidationError:
        return None
    return again if again == model else None
