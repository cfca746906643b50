"""What a CLI command receives (:class:`CommandContext`; :class:`Command` itself is a
component contract in :mod:`mtlkit.components.interfaces`), plus the shared
``CONFIG --set KEY.PATH=VALUE`` arguments."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rich.console import Console

from mtlkit.components.host import PluginHost
from mtlkit.components.interfaces import Command
from mtlkit.errors import UsageError

__all__ = ["Command", "CommandContext", "add_config_arguments", "add_output_arguments"]


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


def add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--out DIR``, ``--resume`` and ``--quiet`` of a command that trains into a new
    directory (``what``: "run", "ablation")."""
    parser.add_argument("--out", help=f"{what} directory (must not exist or be empty)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the interrupted {what} in --out (started with this same config)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def check_resume(args: argparse.Namespace, what: str) -> None:
    """``--resume`` needs ``--out``: the directory to continue."""
    if args.resume and not args.out:
        raise UsageError(f"--resume needs --out DIR, the {what} to continue")
