"""The core commands: ``run``, ``resume``, ``validate`` and ``plugins``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from mtlkit.cli.ablate_command import run_ablation
from mtlkit.cli.base import (
    Command,
    CommandContext,
    add_config_arguments,
    add_output_arguments,
    check_resume,
)
from mtlkit.cli.launch import launch
from mtlkit.components.registry import KIND_TITLES
from mtlkit.components.resolve import resolve_components
from mtlkit.config.loading import load_config
from mtlkit.errors import UsageError
from mtlkit.progress import Progress
from mtlkit.runs.ablation import GRID_FILE
from mtlkit.runs.runner import run
from mtlkit.text import shown
from mtlkit.training import distributed


def _nproc_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train in N processes on this machine under torchrun (DDP: gloo on the CPU, "
        "NCCL on CUDA, one GPU per process); training.batch_size is per process",
    )


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_output_arguments(parser, "run")
    _nproc_argument(parser)


def _run(args: argparse.Namespace, ctx: CommandContext) -> int:
    check_resume(args, "run")
    config = load_config(args.config, args.overrides)  # refused here, before any process
    if args.nproc is not None:
        command = ["run", args.config, *[f"--set={o}" for o in args.overrides]]
        command += [f"--out={args.out}"] if args.out else []
        return launch(args.nproc, command + _shared_flags(args, "resume", "quiet", "debug"))
    return _train(config, args.out, args.resume, args.quiet, ctx)


def _shared_flags(args: argparse.Namespace, *names: str) -> list[str]:
    """The given on/off flags of ``args`` that are on, for the command each rank runs."""
    return [f"--{name}" for name in names if getattr(args, name, False)]


def _train(config, out: str | None, resume: bool, quiet: bool, ctx: CommandContext) -> int:
    # Under torchrun only rank 0 shows progress and the run directory.
    main = distributed.is_main()
    show = not quiet and ctx.err.is_terminal and main
    with Progress(enabled=show, console=ctx.err) as progress:
        result = run(
            config,
            out_dir=out,
            host=ctx.host,
            progress=progress,
            console=ctx.console,
            resume=resume,
        )
    if main:
        ctx.console.print(f"run directory: {shown(result.out_dir)}")
    return 0


def _resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="directory of the interrupted run")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _nproc_argument(parser)


def _resume(args: argparse.Namespace, ctx: CommandContext) -> int:
    grid = Path(args.run_dir) / GRID_FILE
    if grid.is_file():  # an ablation's directory: continue the whole grid
        if args.nproc is not None:
            raise UsageError("--nproc resumes a run, not an ablation: resume it without --nproc")
        return run_ablation(load_config(grid), args.run_dir, True, args.quiet, ctx)
    recorded = Path(args.run_dir) / "config.yaml"
    if not recorded.is_file():
        raise UsageError(f"{args.run_dir} is not an mtlkit run directory (no config.yaml)")
    config = load_config(recorded)
    if args.nproc is not None:
        command = ["resume", args.run_dir, *_shared_flags(args, "quiet", "debug")]
        return launch(args.nproc, command)
    return _train(config, args.run_dir, True, args.quiet, ctx)


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def _validate(args: argparse.Namespace, ctx: CommandContext) -> int:
    config = load_config(args.config, args.overrides)
    components = resolve_components(config, ctx.host)
    ctx.console.print(
        f"{shown(args.config)}: valid. tasks: {shown(', '.join(components.task_names))}; "
        f"constraints: {len(components.constraint_specs)}; seeds: {config.seeds}"
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
            table.add_row(
                *(
                    shown(t)
                    for t in (
                        entry.name,
                        entry.owner,
                        dist,
                        _describe(entry.obj, entry.description),
                    )
                )
            )
        ctx.console.print(table)
    if host.failures:
        table = Table(title="plugins that failed to import", title_justify="left")
        table.add_column("plugin", style="bold")
        table.add_column("distribution")
        table.add_column("error")
        for failure in host.failures:
            table.add_row(
                *(
                    shown(t)
                    for t in (failure.name, failure.distribution or "unknown", failure.error)
                )
            )
        ctx.console.print(table)
    if host.disabled:
        ctx.console.print(f"disabled: {shown(', '.join(sorted(host.disabled)))}")
    return 0


def _describe(obj: Any, description: str) -> str:
    return getattr(obj, "help", None) or description


def run_commands() -> dict[str, Command]:
    return {
        "run": Command("train and evaluate a configuration", _run_arguments, _run),
        "resume": Command(
            "continue an interrupted run (or ablation) from its last saved training state",
            _resume_arguments,
            _resume,
        ),
        "validate": Command(
            "check a configuration without running it", _validate_arguments, _validate
        ),
        "plugins": Command(
            "list every registered component and its plugin", _plugins_arguments, _plugins
        ),
    }
