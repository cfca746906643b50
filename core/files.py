"""Writing outputs without ever leaving a half-written file behind: atomic writes, strict
JSON, and run directories that are never mixed with another run's files."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mtlkit.errors import OutputError, UsageError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def check_run_dir(path: Path) -> None:
    """Refuse an existing non-empty run directory (a run never mixes with or overwrites
    another) and one that could not be created, before any long work starts."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(
            f"output directory {path} already exists and is not empty; nothing was written. "
            "Choose another --out."
        )
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"cannot create output directory {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create output directory {path}: {ancestor} is not writable")


def prepare_run_dir(path: Path) -> Path:
    """Create an empty run directory (see :func:`check_run_dir`).

    A missing directory is created with ``exist_ok=False``, so two runs racing for the same
    path cannot both get it.
    """
    check_run_dir(path)
    if path.is_dir():
        return path  # exists and is empty
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {path}: {exc.strerror}") from None
    try:
        path.mkdir()
    except FileExistsError:
        raise UsageError(f"output directory {path} was just created by another run") from None
    except OSError as exc:
        raise UsageError(f"cannot create output directory {path}: {exc.strerror}") from None
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    A failure (full disk, no permission) raises :class:`OutputError` and leaves the previous
    content of ``path``, if any, untouched.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600 files
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        reason = exc.strerror or str(exc)
        raise OutputError(
            f"cannot write {path}: {reason}"
            + ("; its previous content is unchanged" if path.exists() else "")
        ) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: str | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def to_json(data: Any) -> str:
    """JSON with NaN/inf written as null (strict JSON readers reject NaN)."""
    return json.dumps(_finite(data), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
