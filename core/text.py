"""Text from anywhere (file names, labels, run names, error messages) made safe to show or
store: no terminal control sequences, no rich markup, no spreadsheet formulas, bounded length.

Every message mtlkit prints goes through :func:`shown`; every text cell of a CSV output
through :func:`csv_cell`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from rich.markup import escape

MAX_MESSAGE = 20_000
"""Characters of one printed message; the rest is cut with a note of how much."""

MAX_VALUE = 200
"""Characters of one value echoed inside a message (a YAML value, a CSV cell)."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula."""


def printable(text: Any) -> str:
    """``text`` with terminal control characters (escape sequences, bell, carriage return,
    bidi overrides) shown as ``\\x1b``-style escapes; newlines and tabs are kept."""
    return _CONTROL.sub(lambda m: _escaped(m.group()), str(text))


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... ({len(text) - limit} more characters)"


def shown(text: Any, limit: int = MAX_MESSAGE) -> str:
    """``text`` ready for a rich console: clipped, control characters escaped, and rich
    markup escaped, so that ``[red]`` or ``[/]`` in a file name prints as itself."""
    return escape(printable(clip(str(text), limit)))


def echo(value: Any, limit: int = MAX_VALUE) -> str:
    """A value quoted inside a message (``repr``), clipped: an echo never floods the screen."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def csv_cell(value: Any) -> str:
    """A text cell of a CSV output that no spreadsheet runs as a formula: a leading ``=``,
    ``+``, ``-``, ``@``, tab or carriage return gets a ``'`` in front (OWASP's advice).
    Numbers are written by their callers, not through this function."""
    text = unicodedata.normalize("NFC", str(value))
    return "'" + text if text.startswith(FORMULA_START) else text
