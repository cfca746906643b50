"""Writing outputs without ever leaving a half-written file behind: atomic writes, strict
JSON, and run directories that are never mixed with another run's files."""

from __future__ import annotations

import fcntl
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


LOCK_NAME = ".mtl-lock"
"""The file a run directory's writer holds an OS lock on for the run's life."""

ENSEMBLE_PREDICTIONS = "ensemble_predictions.csv"
"""Each image's probabilities of the ensemble of the seeds (``evaluation.ensemble``)."""

RUN_FILES = frozenset(
    {
        "config.yaml",
        "splits.json",
        "environment.json",
        "metrics.json",
        "predictions.csv",
        ENSEMBLE_PREDICTIONS,
        "history.json",
        "history.csv",
        "timing.json",
        "checkpoints",
        LOCK_NAME,
    }
)
"""Names mtlkit itself writes in a run directory (and in each fold or seed folder)."""

MAX_NAME = 200


def output_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file a plugin writes into a run directory, or None.

    It must be a plain relative path inside the run directory: not empty, not absolute, no
    ``..`` or ``.`` part, no hidden part, no control character or backslash, and no name
    mtlkit itself writes (``checkpoints/best.safetensors`` would replace the weights)."""
    if not name or not name.strip():
        return "an output file name cannot be empty"
    if len(name) > MAX_NAME:
        return f"an output file name has at most {MAX_NAME} characters"
    if any(ord(c) < 32 or c in "\\\x7f" for c in name):
        return "an output file name cannot hold control characters or backslashes"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "must be a relative name inside the run directory, not an absolute path"
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return (
            "must be a plain relative name inside the run directory "
            "(no '..', '.', '//' or hidden parts)"
        )
    if parts[0] in RUN_FILES or (len(parts) > 1 and parts[0].startswith(("fold_", "seed_"))):
        return f"{parts[0]!r} is written by mtlkit itself in a run directory; choose another name"
    return None


def check_run_dir(path: Path) -> None:
    """Refuse an existing non-empty run directory (a run never mixes with or overwrites
    another) and one that could not be created, before any long work starts."""
    if path.is_symlink() and not path.exists():
        raise UsageError(
            f"output directory {path} is a symbolic link to {os.readlink(path)}, which does "
            "not exist; remove the link or choose another --out"
        )
    if (path / LOCK_NAME).exists():
        RunLock(path).release()  # refused while another process writes there; else stale
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


def check_output_file(path: Path, overwrite: bool = False) -> None:
    """Refuse, before any long work starts, an output file that exists (unless
    ``overwrite``), a folder in its place, and a place where it could not be written."""
    if path.is_dir():
        raise UsageError(f"output file {path} is a folder; name a file")
    if path.exists() and not overwrite:
        raise UsageError(
            f"output file {path} already exists; nothing was written. Choose another name or "
            "pass --force to replace it."
        )
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write output file {path}: {ancestor} is not a writable folder")


class RunLock:
    """An OS lock (``flock``) on a run directory's lock file, held by the one process that
    writes the run; a second writer (``mtl run`` into the same ``--out``, ``mtl resume`` of
    a run still training) is refused. The lock dies with the process, so a killed run never
    leaves a stale lock."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / LOCK_NAME
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UsageError(f"cannot lock run directory {folder}: {exc.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise UsageError(
                f"run directory {folder} is being written by another mtl process right now; "
                "wait for it to finish or choose another --out"
            ) from None

    def release(self) -> None:
        """Remove the lock file and let go of the lock (idempotent)."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def prepare_run_dir(path: Path) -> RunLock:
    """Create an empty run directory (see :func:`check_run_dir`) and lock it; returns the
    lock, to be held (and released) by the run.

    A missing directory is created with ``exist_ok=False``, and the lock is taken before
    the directory is checked to be still empty, so two runs racing for the same path
    cannot both get it.
    """
    check_run_dir(path)
    if path.is_dir():
        return _locked_empty(path)
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
    return _locked_empty(path)


def _locked_empty(path: Path) -> RunLock:
    lock = RunLock(path)
    if any(p.name != LOCK_NAME for p in path.iterdir()):
        lock.release()
        raise UsageError(
            f"output directory {path} was just filled by another run; nothing was written. "
            "Choose another --out."
        )
    return lock


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
