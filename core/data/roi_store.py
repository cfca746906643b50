"""Where the RoI arrays of a scan live: in memory, or in a scratch file on disk.

``data.cache_mode: disk`` puts the RoI tensor (and the masks cut with it) into a file in
``data.cache_dir/rois/``, memory-mapped, so that a run over more images than fit in memory
reads each batch from disk (the operating system's page cache keeps what it can) instead
of holding every crop. The file is unlinked as soon as it is mapped: the mapping keeps it
alive exactly as long as the tensor, so a finished, refused or killed run leaves nothing
behind and two runs never share one. What is kept between runs is the per-image entries of
:mod:`mtlkit.data.disk_cache`, from which a later scan fills a new file without decoding.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from mtlkit.errors import DataError

ROI_FOLDER = "rois"
"""The subfolder of ``data.cache_dir`` that holds the RoI files of running scans."""

_MAPPED: weakref.WeakValueDictionary[int, np.memmap] = weakref.WeakValueDictionary()
"""The live arrays of :func:`new_roi_array` on disk, for :func:`is_on_disk`."""


def new_roi_array(shape: tuple[int, ...], folder: Path | None = None) -> torch.Tensor:
    """A zero uint8 tensor of ``shape``: in memory, or with ``folder`` a memory-mapped file
    in it (unlinked at once; writes go to the file, not to the process's memory)."""
    if folder is None or not np.prod(shape, dtype=np.int64):
        return torch.zeros(shape, dtype=torch.uint8)
    size = int(np.prod(shape, dtype=np.int64))
    name = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=folder, prefix="rois-", suffix=".u8")
        with os.fdopen(handle, "r+b") as out:
            out.truncate(size)  # a sparse file of zeros: no byte is written yet
        array = np.memmap(name, dtype=np.uint8, mode="r+", shape=shape)
    except OSError as exc:
        raise DataError(
            f"cannot create a {size / 2**20:.0f} MiB RoI file in {folder} "
            f"(data.cache_mode: disk): {exc.strerror or exc}"
        ) from None
    finally:
        if name is not None:
            # The mapping keeps the file alive. Where a mapped file cannot be removed
            # (Windows), it stays in the folder until someone deletes it.
            with contextlib.suppress(OSError):
                Path(name).unlink(missing_ok=True)
    _MAPPED[id(array)] = array  # arrays are unhashable; an id is unique while alive
    return torch.from_numpy(array)


def is_on_disk(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` reads a memory-mapped file of :func:`new_roi_array` (a view of it
    included), not memory of its own."""
    if tensor.device.type != "cpu" or not tensor.numel():
        return False
    start = tensor.untyped_storage().data_ptr()
    return any(m.ctypes.data <= start < m.ctypes.data + m.nbytes for m in list(_MAPPED.values()))
