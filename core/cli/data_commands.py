"""``mtl data check`` (is this data usable, and what is in it?) and ``mtl evaluate`` (score a
trained model on another data set)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from mtlkit.cli.base import Command, CommandContext, add_config_arguments
from mtlkit.components.resolve import (
    call_component,
    read_sample_set,
    resolve_components,
    resolve_source,
)
from mtlkit.config.loading import load_config
from mtlkit.data.inspection import DataReport, inspect_data, roi_for
from mtlkit.errors import DataError
from mtlkit.evaluation.external import evaluate_checkpoint
from mtlkit.progress import Progress
from mtlkit.results import RunResult
from mtlkit.text import shown


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check(args: argparse.Namespace, ctx: CommandContext) -> int:
    config = load_config(args.config, args.overrides)
    components = resolve_components(config, ctx.host)
    show = not args.quiet and ctx.err.is_terminal
    reports: list[tuple[str, DataReport]] = []
    with Progress(enabled=show, console=ctx.err) as progress:

        def images(total: int):
            task = progress.task("reading images", total=total)
            return lambda: progress.advance(task)

        sets = [("data", config.data.source, None, config.data)]
        for index, external in enumerate(config.evaluation.external):
            data = roi_for(config.data, external.roi)
            sets.append((f"evaluation.external[{index}]", external.source, external.name, data))
        for where, source, external_name, data in sets:
            entry, options, columns = resolve_source(ctx.host, source, f"{where}.source")
            try:
                sample_set = read_sample_set(entry, options, f"{where}.source", columns)
            except DataError as exc:  # the source itself refused: its problems, no summary
                report = DataReport(f"{where}.source ({entry.name})", [], [str(exc)])
            else:
                report = inspect_data(
                    sample_set,
                    components.heads,
                    data,
                    config.evaluation.reference_columns if external_name is None else {},
                    full=True,
                    external=external_name,
                    progress=images,
                )
            reports.append((where, report))
    for where, report in reports:
        print_report(ctx.console, where, report, components.task_names)
    problems = sum(len(r.problems) for _, r in reports)
    for _, report in reports if not problems else ():
        if report.prepared is not None:
            report.prepared.save_cache()
    if problems:
        ctx.console.print(f"[bold red]{problems} problem(s)[/]: fix them before training.")
        return 2
    ctx.console.print("[bold green]no problems found[/]")
    return 0


def print_report(console: Console, where: str, report: DataReport, tasks: list[str]) -> None:
    """The summary tables, then every warning and every problem."""
    console.print(f"[bold]{shown(where)}[/]: {shown(report.description)}")
    prepared = report.prepared
    if report.samples:
        console.print(
            f"  {len(report.samples)} images of "
            f"{len({s.patient_id for s in report.samples})} patients"
            + (f"; {report.excluded} excluded by data.exclude" if report.excluded else "")
        )
    if prepared is not None:
        for fold in range(prepared.n_folds):
            title = "splits" if prepared.n_folds == 1 else f"fold {fold + 1}"
            console.print(split_table(prepared.for_fold(fold), tasks, title))
    if report.scan is not None:
        console.print(size_line(report))
        console.print(duplicate_line(report))
    for warning in report.warnings:
        console.print(f"  [yellow]warning:[/] {shown(warning)}")
    for problem in report.problems:
        console.print(f"  [red]problem:[/] {shown(problem)}")


def split_table(prepared, tasks: list[str], title: str) -> Table:
    """Images, patients and, per task, ``labelled (positive)`` images in each split."""
    order = {"train": 0, "val": 1, "test": 2}
    names = sorted(set(prepared.splits), key=lambda s: (order.get(s, 3), s))
    parts = {name: prepared.indices(name) for name in names}
    parts["all"] = np.arange(len(prepared.samples))
    table = Table(
        title=f"{title}: images with a known label (positive) per task", title_justify="left"
    )
    table.add_column("", style="bold")
    for name in parts:
        table.add_column(name, justify="right")
    table.add_row("images", *(str(len(rows)) for rows in parts.values()))
    table.add_row(
        "patients",
        *(str(len({prepared.samples[i].patient_id for i in rows})) for rows in parts.values()),
    )
    for column, task in enumerate(tasks):
        cells = []
        for rows in parts.values():
            values = prepared.targets[rows, column].numpy()
            known = values[~np.isnan(values)]
            cells.append(f"{len(known)} ({int((known == 1).sum())})")
        table.add_row(shown(task), *cells)
    return table


def size_line(report: DataReport) -> str:
    facts = [f for f in report.scan.facts if f is not None]
    if not facts:
        return "  image sizes: no readable image"
    widths = np.array([f.width for f in facts])
    heights = np.array([f.height for f in facts])

    def spread(values: np.ndarray) -> str:
        return f"{values.min()}-{int(np.median(values))}-{values.max()}"

    cached = f"; {report.scan.from_cache} read from the cache" if report.scan.from_cache else ""
    return (
        f"  image sizes (min-median-max): width {spread(widths)}, height {spread(heights)}{cached}"
    )


def duplicate_line(report: DataReport) -> str:
    found = report.duplicates
    near = f"{len(found.near_pairs)} near-duplicate pair(s)"
    if found.cross_patient_pairs:
        near += f" ({found.cross_patient_pairs} linking different patients)"
    return (
        f"  duplicates: {len(found.exact_pairs)} identical pair(s), {near}; "
        f"{found.linked_groups} group(s) of patients kept in one split"
    )


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="weights saved by a run (.safetensors)")
    parser.add_argument(
        "--data", required=True, help="YAML with name, source and optionally roi of the test set"
    )
    parser.add_argument("--out", help="write metrics.json and predictions.csv into this folder")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _evaluate(args: argparse.Namespace, ctx: CommandContext) -> int:
    show = not args.quiet and ctx.err.is_terminal
    with Progress(enabled=show, console=ctx.err) as progress:
        result = evaluate_checkpoint(
            Path(args.checkpoint),
            Path(args.data),
            out_dir=Path(args.out) if args.out else None,
            device=args.device,
            host=ctx.host,
            progress=progress,
        )
    for entry, options in result.reports:
        report = call_component(entry, options, "reports")
        report(RunResult(result.out_dir or Path("."), result.metrics), ctx.console)
    if result.out_dir:
        ctx.console.print(f"written: {shown(result.out_dir)}")
    return 0


def data_commands() -> dict[str, Command]:
    return {
        "data check": Command(
            "check a configuration's data: summary tables and every problem (exit 2 if any)",
            _check_arguments,
            _check,
        ),
        "evaluate": Command(
            "evaluate a trained checkpoint on another data set (external validation)",
            _evaluate_arguments,
            _evaluate,
        ),
    }
