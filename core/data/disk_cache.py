"""Decoded RoIs kept on disk between runs, one small file per image and setting.

Entries are ``.npz`` files of plain arrays, read with ``allow_pickle=False``; each is written
to a temporary file and renamed, so an interrupted run never leaves a half-written entry
that a later run would trust.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mtlkit.errors import DataError

if TYPE_CHECKING:
    from mtlkit.data.scan import ImageFacts


class DiskCache:
    """``get``/``put`` RoI crops and image facts under a content key."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.failure: str | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create data.cache_dir {folder}: {exc.strerror}") from None

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def get(self, key: str) -> tuple[np.ndarray, ImageFacts] | None:
        """The stored entry, or None when absent or unreadable (it is then rebuilt)."""
        from mtlkit.data.scan import ImageFacts

        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as entry:
                crop = entry["roi"]
                width, height = (int(v) for v in entry["size"])
                digest = str(entry["digest"])
                phash = entry["phash"].tobytes() if bool(entry["has_phash"]) else None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return None
        return crop, ImageFacts(width, height, digest, phash)

    def put(self, key: str, crop: np.ndarray, facts: ImageFacts) -> None:
        """Store an entry. A failure (full disk, read-only folder) turns the cache off for
        the rest of the run and is kept in ``failure``: caching only saves time."""
        if self.failure:
            return
        path = self._path(key)
        temporary = None
        try:
            path.parent.mkdir(exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                np.savez(
                    out,
                    roi=crop,
                    size=np.array([facts.width, facts.height]),
                    digest=np.array(facts.digest),
                    phash=np.frombuffer(facts.phash or b"", dtype=np.uint8),
                    has_phash=np.array(facts.phash is not None),
                )
            os.replace(temporary, path)
        except OSError as exc:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            self.failure = f"cannot write to data.cache_dir {self.folder} ({exc}); not caching"
