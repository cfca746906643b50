"""A validated model written out with its defaults: what ``mtl config show`` prints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python


def written_out(model: BaseModel) -> dict[str, Any]:
    """``model`` as a plain mapping (YAML-ready) with every default written out, nested
    models included, that still validates back to the same model.

    A model whose validator tells a written key from a default (``test_fraction`` with
    ``folds``, ``bin_width`` with ``bin_count``) refuses some defaults written out; those
    are left out, so the result always reads back to ``model``.
    """
    fields = type(model).model_fields
    full = {name: _plain(getattr(model, name)) for name in fields}
    if _reads_back(model, full):
        return full
    kept = {name: full[name] for name in fields if name in model.model_fields_set}
    for name in fields:
        if name not in kept and _reads_back(model, {**kept, name: full[name]}):
            kept[name] = full[name]
    return {name: kept[name] for name in fields if name in kept}


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return written_out(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return to_jsonable_python(value)


def _reads_back(model: BaseModel, data: dict[str, Any]) -> bool:
    try:
        return type(model).model_validate(data) == model
    except ValidationError:
        return False
