"""What a CLI command is: its help, its arguments and what it runs, plus the shared
``CONFIG --set KEY.PATH=VALUE`` arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console

from mtlkit.components.host import PluginHost


@dataclass(frozen=True)
class CommandContext:
    """What a command receives besides its arguments."""

    host: PluginHost
    console: Console  # standard output
    err: Console  # standard error: progress and problems


@dataclass(frozen=True)
class Command:
    """A CLI command; plugins register these through ``mtl_register_commands``."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, CommandContext], int | None]


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
