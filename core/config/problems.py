"""Pydantic validation errors as ``(yaml_path, message)`` pairs users can act on."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mtlkit.text import MAX_VALUE, clip, echo


def format_loc(loc: tuple[Any, ...], prefix: str = "") -> str:
    """Render a pydantic error location as a YAML path: ``heads[2].threshold``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def validation_problems(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """One ``(yaml_path, message)`` per pydantic error, with messages users can act on."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(p for p in error["loc"] if not _is_union_tag(p))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif "input" in error and error["type"] not in ("missing",):
            message += f" (got {echo(error['input'])})"
        problems.append((clip(format_loc(loc, prefix), MAX_VALUE), clip(message, 2 * MAX_VALUE)))
    return problems


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the union member's name ("int", "list[int]") to the location; users
    # never wrote that, so drop it.
    return isinstance(part, str) and ("[" in part or part in {"int", "str", "float", "bool"})
