"""The ``mtl`` command line: a thin layer over the engine API.

Usage errors (config, data, plugins) print a short message and exit with code 2; other
mtlkit errors exit with 1; neither prints a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from rich.console import Console

from mtlkit.cli.ablate_command import ablate_commands
from mtlkit.cli.base import Command, CommandContext
from mtlkit.cli.config_commands import config_commands
from mtlkit.cli.data_commands import data_commands
from mtlkit.cli.export_command import export_commands
from mtlkit.cli.run_commands import run_commands
from mtlkit.components.host import PluginHost
from mtlkit.errors import MtlError, UsageError
from mtlkit.text import printable, shown
from mtlkit.training import distributed
from mtlkit.version import __version__

__all__ = ["Command", "CommandContext", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mtl`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    err = Console(stderr=True, highlight=False)
    with warnings.catch_warnings():
        warnings.showwarning = _shown_warning(err)
        return _main(argv, debug, err)


def _shown_warning(err: Console):
    """Python warnings (a library's UserWarning) as one short line, not file and source."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        err.print(f"[yellow]warning:[/] {shown(message)}")

    return show


def _main(argv: list[str], debug: bool, err: Console) -> int:
    try:
        host = PluginHost()
        for failure in host.failures if distributed.is_main() else []:  # once per torchrun job
            err.print(f"[yellow]warning:[/] {shown(failure.message())}")  # skipped, not fatal
        parser = build_parser(host)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, or argparse's own usage error (2)
            return exc.code if isinstance(exc.code, int) else 0
        if not hasattr(args, "command_run"):
            parser.print_help()
            return 2
        code = args.command_run(args, CommandContext(host=host, console=Console(), err=err))
        return int(code or 0)
    except MtlError as exc:
        if debug:
            raise
        kind = "error" if isinstance(exc, UsageError) else "failed"
        if not getattr(exc, "reported_by_rank_0", False):  # torchrun: printed once, by rank 0
            err.print(f"[bold red]{kind}:[/] {shown(exc)}")
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]")
        return 130
    except Exception as exc:  # an unexpected failure: short by default, full with --debug
        if debug:
            raise
        err.print(
            f"[bold red]internal error:[/] {shown(type(exc).__name__)}: {shown(exc)}\n"
            "Run again with --debug for the traceback."
        )
        return 1


class _Parser(argparse.ArgumentParser):
    """argparse's own messages (usage errors echo what was typed) without raw control
    characters; subcommand parsers are of the same class."""

    def _print_message(self, message: str, file=None) -> None:
        super()._print_message(printable(message) if message else message, file)


def _debug_flag() -> argparse.ArgumentParser:
    # Accepted after the subcommand too (`mtl run cfg.yaml --debug`); main() reads argv.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    return parent


def build_parser(host: PluginHost) -> argparse.ArgumentParser:
    """The argument parser with the core commands and every plugin's commands."""
    parser = _Parser(
        prog="mtl", description="mtlkit: multi-task deep learning for breast ultrasound."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"mtlkit {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    commands = [
        ("mtlkit", name, cmd)
        for name, cmd in {
            **data_commands(),
            **run_commands(),
            **ablate_commands(),
            **export_commands(),
            **config_commands(),
        }.items()
    ]
    commands += [(e.owner, e.name, e.obj) for e in host.commands]
    taken = {}
    for owner, name, command in commands:
        if name in taken:
            raise UsageError(f"command {name!r} is registered by {taken[name]!r} and {owner!r}")
        taken[name] = owner
        *group_path, leaf = name.split()
        target = subparsers
        for depth, group in enumerate(group_path):
            key = " ".join(group_path[: depth + 1])
            if key not in groups:
                group_parser = target.add_parser(group, help=f"{group} commands")
                groups[key] = group_parser.add_subparsers(
                    title=f"{key} commands", metavar="COMMAND"
                )
            target = groups[key]
        sub = target.add_parser(
            leaf, help=command.help, description=command.help, parents=[_debug_flag()]
        )
        command.add_arguments(sub)
        sub.set_defaults(command_run=command.run)
    return parser
