"""Decoded RoIs kept on disk between runs, one small file per image and setting.

An entry is a few named plain arrays (what the scan stores: the crop, the image size, its
digest, its hash); this module knows nothing of their meaning. Entries are ``.npz`` files
read with ``allow_pickle=False``; each is written to a temporary file and renamed, so an
interrupted run never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mtlkit.errors import DataError

Entry = dict[str, np.ndarray]

MAX_ENTRY_BYTES = 64 << 20
"""Largest entry read back (a 2048 px RoI is 4 MiB); a larger file is rebuilt."""


class DiskCache:
    """``get``/``put`` entries of named arrays under a content key."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.failure: str | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create data.cache_dir {folder}: {exc.strerror}") from None

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def get(self, key: str) -> Entry | None:
        """The stored entry, or None when absent or unreadable (the caller rebuilds it)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with zipfile.ZipFile(path) as archive:  # bounded before any array is read
                if sum(i.file_size for i in archive.infolist()) > MAX_ENTRY_BYTES:
                    return None
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except Exception:  # noqa: BLE001 - any damage means "rebuild it", never a failure
            return None

    def put(self, key: str, entry: Entry) -> None:
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
                np.savez(out, **entry)
            os.replace(temporary, path)
        except OSError as exc:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            self.failure = f"cannot write to data.cache_dir {self.folder} ({exc}); not caching"
