"""The core commands: ``run``, ``validate`` and ``plugins``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from ..components import resolve_components
from ..config import load_config
from ..pluginhost import PluginHost
from ..progress import Progress


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


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", help="run directory (must not exist or be empty)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _run(args: argparse.Namespace, ctx: CommandContext) -> int:
    from ..runner import run

    config = load_config(args.config, args.overrides)
    show = not args.quiet and ctx.err.is_terminal
    with Progress(enabled=show, console=ctx.err) as progress:
        result = run(
            config, out_dir=args.out, host=ctx.host, progress=progress, console=ctx.console
        )
    ctx.console.print(f"run directory: {result.out_dir}")
    return 0


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def _validate(args: argparse.Namespace, ctx: CommandContext) -> int:
    config = load_config(args.config, args.overrides)
    components = resolve_components(config, ctx.host)
    ctx.console.print(
        f"{args.config}: valid. tasks: {', '.join(components.task_names)}; "
        f"constraints: {len(components.constraints)}; seeds: {config.seeds}"
    )
    return 0


def _plugins_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _plugins(args: argparse.Namespace, ctx: CommandContext) -> int:
    host = ctx.host
    for kind, registry in host.registries.items():
        table = Table(title=KIND_TITLES.get(kind, kind), title_justify="left", expand=False)
        table.add_column("name", style="bold")
        table.add_column("plugin")
        table.add_column("distribution")
        table.add_column("description")
        for entry in registry:
            dist = host.owner_distribution(entry.owner) or "(in-process)"
            table.add_row(entry.name, entry.owner, dist, _describe(entry.obj, entry.description))
        ctx.console.print(table)
    if host.disabled:
        ctx.console.print(f"disabled: {', '.join(sorted(host.disabled))}")
    return 0


KIND_TITLES = {
    "backbone": "backbones",
    "head": "task heads",
    "task_loss": "task losses",
    "constraint": "constraints",
    "weighting": "task weightings",
    "metric": "metrics",
    "data_source": "data sources",
    "report": "reports",
    "command": "commands",
}


def _describe(obj: Any, description: str) -> str:
    return getattr(obj, "help", None) or description


def builtin_commands() -> dict[str, Command]:
    from .data_commands import data_commands

    return {
        **data_commands(),
        "run": Command("train and evaluate a configuration", _run_arguments, _run),
        "validate": Command(
            "check a configuration without running it", _validate_arguments, _validate
        ),
        "plugins": Command(
            "list every registered component and its plugin", _plugins_arguments, _plugins
        ),
    }
