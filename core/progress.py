"""Rich progress bars for epochs and batches, or nothing when disabled."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from mtlkit.text import shown


class Progress:
    """Thin wrapper so the engine never checks whether bars are shown."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self._bars: RichProgress | None = None
        if enabled:
            self._bars = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )

    def __enter__(self) -> Progress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bars is not None:
            self._bars.stop()

    def task(self, description: str, total: int) -> int | None:
        if self._bars is None:
            return None
        return self._bars.add_task(shown(description), total=total)

    def advance(self, task: int | None, description: str | None = None) -> None:
        if self._bars is not None and task is not None:
            text = shown(description) if description is not None else None
            self._bars.update(task, advance=1, description=text)

    def remove(self, task: int | None) -> None:
        if self._bars is not None and task is not None:
            self._bars.remove_task(task)

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        if self._bars is None:
            yield
            return
        task = self._bars.add_task(shown(message), total=None)
        try:
            yield
        finally:
            self._bars.remove_task(task)
