"""Reading the files a user names without unbounded memory or time: regular files only
(never a FIFO, a device such as ``/dev/zero``, or a folder), at most a known size.

:mod:`mtlkit.files` writes outputs; this module reads inputs. Every reader of a config,
manifest, split file, run output or image goes through :func:`read_bytes` or
:func:`check_regular`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mtlkit.errors import UsageError

KIB, MIB = 1 << 10, 1 << 20

MAX_CONFIG_BYTES = 1 * MIB
"""A run configuration or test-set YAML file."""

MAX_TABLE_BYTES = 256 * MIB
"""A manifest, an annotation file, a split file or a JSON document of a run."""

MAX_IMAGE_BYTES = 1024 * MIB
"""One image file (DICOM cine loops are the largest)."""


class InputFileError(UsageError):
    """A named input is missing, not a regular file, or too large; the message names it."""


def check_regular(path: Path, what: str, limit: int) -> int:
    """The size of ``path``; raises :class:`InputFileError` unless it is a regular file of
    at most ``limit`` bytes. FileNotFoundError passes through, for callers with their own
    "not found" message."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputFileError(f"cannot read {what} {path}: {reason}") from None
    return _checked(path, info, what, limit)


def _checked(path: Path, info: os.stat_result, what: str, limit: int) -> int:
    if stat.S_ISDIR(info.st_mode):
        raise InputFileError(f"cannot read {what} {path}: Is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(
            f"cannot read {what} {path}: not a regular file (a pipe, socket or device)"
        )
    if info.st_size > limit:
        raise InputFileError(
            f"{what} {path} is too large: {info.st_size} bytes, at most {limit} are read"
        )
    return info.st_size


def read_bytes(path: Path, what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, else :class:`InputFileError`
    naming ``what`` and the file. FileNotFoundError passes through.

    The file is opened without blocking (a FIFO would wait for a writer forever) and checked
    on the open descriptor, so a file swapped after the check is still bounded."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputFileError(f"cannot read {what} {path}: {reason}") from None
    try:
        _checked(path, os.fstat(fd), what, limit)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputFileError(f"{what} {path} is too large: more than {limit} bytes")
    return data
