"""Reading label values the way they arrive from CSV files and generators."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

MISSING = frozenset({"", "nan", "na", "n/a", "none", "null", "unknown", "?"})
"""Texts that mean "no label" in a CSV cell."""

NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A number as text: ASCII digits only (Python's float() also takes ``١``, ``1_0``, ``inf``)."""

COUNT = re.compile(r"\+?[0-9]+(?:\.0*)?")
"""A count as text: ASCII digits, no exponent (``1e1`` is not a node count)."""


def as_count(value: Any) -> int | None:
    """``value`` as a non-negative integer count, or None when it is not one (``1e1``,
    ``2.5``, ``-1``, non-ASCII digits, booleans)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = as_number(value)
        return int(number) if number is not None and number >= 0 and number.is_integer() else None
    text = str(value).strip()
    return int(float(text)) if COUNT.fullmatch(text) else None


def canonical(value: Any) -> str | None:
    """A comparable form of a label value; None when the value means "unknown".

    ``1``, ``1.0``, ``"1"``, ``True`` all become ``"1"``; strings are stripped and
    lower-cased; empty strings, ``None`` and NaN are unknown.
    """
    if value is None:
        return None
    if isinstance(value, np.generic):  # numpy scalars behave like the Python ones
        value = value.item()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return None
        number = as_number(value)
        return _number_text(number) if number is not None else str(value).lower()
    text = str(value).strip().lower()
    if text in MISSING:
        return None
    number = as_number(text)
    return _number_text(number) if number is not None else text


def as_number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a number."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return float(value)
    try:
        if isinstance(value, (int, float)):
            return float(value) if math.isfinite(value) else None
        text = str(value).strip()
        if not NUMBER.fullmatch(text):
            return None
        number = float(text)
    except (ValueError, OverflowError):  # text, or an integer beyond float range
        return None
    return number if math.isfinite(number) else None


def _number_text(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)
