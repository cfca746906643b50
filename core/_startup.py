"""Ctrl-C while the ``mtl`` command is still importing (torch takes seconds): a short
message and exit code 130, as once the command runs, instead of a long traceback."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

CONSOLE_SCRIPT = "mtl"


def quiet_interrupts_while_importing() -> Callable[[], None]:
    """In the ``mtl`` console script only (never when mtlkit is imported as a library):
    until the returned function is called, Ctrl-C prints ``interrupted`` and exits 130."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if script.removesuffix(".exe") != CONSOLE_SCRIPT:
        return lambda: None
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGINT, _interrupted)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore


def _interrupted(signum, frame) -> None:
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(130)
