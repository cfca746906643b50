"""What a CLI command receives (:class:`CommandContext`; :class:`Command` itself is a
component contract in :mod:`mtlkit.components.interfaces`), plus the shared
``CONFIG --set KEY.PATH=VALUE`` arguments."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rich.console import Console

from mtlkit.components.host import PluginHost
from mtlkit.components.interfaces import Command

__all__ = ["Command", "CommandContext", "add_config_arguments"]


@dataclass(frozen=True)
class CommandContext:
    """What a command receives besides its arguments."""

    host: PluginHost
    console: Console  # standard output
    err: Console  # standard error: progress and problems


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run configuration (YAML)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value, e.g. --set training.epochs=3 (repeatable)",
    )
