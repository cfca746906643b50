"""Atomic file writes done by a background thread, in order, so that training does not wait
for the disk (a training state of 180 MB takes a while to reach it: ``fsync``)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

from mtlkit.files import atomic_write_bytes

Write = Callable[[Path, bytes], None]


class BackgroundWriter:
    """Writes ``(path, bytes)`` with :func:`~mtlkit.files.atomic_write_bytes` on one
    background thread, in the order they were handed over.

    The content is final when :meth:`write` is called (the caller serialises first), so
    the training loop may change its tensors at once. Each file keeps the guarantee of the
    atomic write: a kill at any instant leaves the previous content or the new one. At
    most ``pending`` writes wait, so a slow disk slows training down instead of filling
    the memory. A failed write is raised (as the :class:`~mtlkit.errors.OutputError` it
    was) by the next :meth:`write` or by :meth:`flush`, which waits until every file
    handed over is on disk. Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, pending: int = 2, write: Write = atomic_write_bytes):
        if pending < 1:
            raise ValueError(f"pending must be at least 1, got {pending}")
        self._write = write
        self._queue: queue.Queue[tuple[Path, bytes] | None] = queue.Queue(maxsize=pending)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def write(self, path: Path, data: bytes) -> None:
        """Hand ``data`` over to be written to ``path``; returns before it is on disk."""
        self._raise_failure()
        if self._thread is None:
            # Not a daemon: the interpreter waits for a write in progress at exit instead
            # of killing it halfway (the atomic rename keeps the old file either way).
            self._thread = threading.Thread(target=self._run, name="mtlkit-writer")
            self._thread.start()
        self._queue.put((path, data))

    def flush(self) -> None:
        """Wait until every write handed over is done; raise the first that failed."""
        if self._thread is not None:
            self._queue.join()
        self._raise_failure()

    def close(self) -> None:
        """Flush, then stop the thread (the writer may be used again afterwards)."""
        try:
            self.flush()
        finally:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._thread = None

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
            return
        try:  # already failing: finish what was handed over, keep the first error
            self.close()
        except Exception:  # noqa: BLE001  (the exception being raised says more)
            pass

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:  # after a failure, later files are not written
                    self._write(*item)
            except BaseException as exc:  # noqa: BLE001  (handed to the training thread)
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
