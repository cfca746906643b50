"""Radiomics features kept on disk, one small file per image and extraction setting.

An entry's key is the SHA-256 of what PyRadiomics is given (the RoI crop's pixels and the
region's pixels, so the same image as a PNG or a DICOM, or a mask saved as 0/255 or 0/1,
shares one entry) and of every setting and version that changes the numbers. Entries are
``.npz`` files of plain arrays, read with ``allow_pickle=False`` and written to a temporary
file that is then renamed, so several extraction processes may write at once and an
interrupted run never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageFeatures:
    """One image's features, or why there are none (``failure``)."""

    names: tuple[str, ...] = ()
    values: np.ndarray | None = None  # float64, one per name
    failure: str | None = None
    from_cache: bool = False
    cache_problem: str | None = None  # the entry could not be written (full disk, ...)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mtlkit/radiomics`` (``~/.cache/mtlkit/radiomics``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "mtlkit" / "radiomics"


class FeatureCache:
    """``get``/``put`` one image's features under its key."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def get(self, key: str) -> ImageFeatures | None:
        """The stored entry, or None when absent or unreadable (it is then extracted anew)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as entry:
                names = tuple(str(n) for n in entry["names"])
                values = np.array(entry["values"], dtype=np.float64)
                failure = str(entry["failure"]) if bool(entry["failed"]) else None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return None
        if failure is None and len(names) != len(values):
            return None
        return ImageFeatures(names, values if failure is None else None, failure, True)

    def put(self, key: str, features: ImageFeatures) -> str | None:
        """Store an entry; returns what went wrong instead of raising (caching only saves
        time: a full disk or a read-only folder must not stop the run)."""
        path = self._path(key)
        temporary = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                np.savez(
                    out,
                    names=np.array(features.names, dtype=str),
                    values=np.zeros(0) if features.values is None else features.values,
                    failure=np.array(features.failure or ""),
                    failed=np.array(features.failure is not None),
                )
            os.replace(temporary, path)
        except OSError as exc:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            return f"cannot write the radiomics feature cache {self.folder} ({exc}); not caching"
        return None
