"""``mtl data check`` (is this data usable, and what is in it?), ``mtl data describe`` (its
Table 1: training and validation against test) and ``mtl evaluate`` (score a trained model
on another data set)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
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
from mtlkit.config.schema import RoiConfig
from mtlkit.data.characteristics import (
    COLUMNS,
    MAX_CATEGORIES,
    TITLES,
    Characteristics,
    ColumnChoice,
    describe_data,
)
from mtlkit.data.inspection import DataReport, inspect_data, prepare_data, roi_for
from mtlkit.errors import DataError, UsageError
from mtlkit.evaluation.external import evaluate_checkpoint
from mtlkit.files import atomic_write_text, check_run_dir, prepare_run_dir, to_json
from mtlkit.inference.paths import PATHS as INFERENCE_PATHS
from mtlkit.progress import Progress
from mtlkit.results import RunResult
from mtlkit.text import shown
from mtlkit.training.localizer import load_localizer


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
                    masks=bool(components.dense_heads),
                    locate=_locator(data.roi, ctx),
                )
            reports.append((where, report))
    for where, report in reports:
        print_report(ctx.console, where, report, [h.name for h in components.heads])
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


def _describe_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="write characteristics.csv and characteristics.json into this new or empty folder",
    )
    parser.add_argument(
        "--fold",
        type=int,
        default=1,
        metavar="N",
        help="with data.split.folds: the fold whose test part is compared with the rest "
        "(default 1)",
    )
    parser.add_argument(
        "--columns",
        action="append",
        default=[],
        metavar="COL[,COL...]",
        help="describe only these metadata columns (default: every column that is not an "
        "image, id, mask, box, task label or reference column)",
    )
    parser.add_argument(
        "--numeric",
        action="append",
        default=[],
        metavar="COL",
        help="describe COL as numeric: mean ± SD, t-test (default: when every value is a number)",
    )
    parser.add_argument(
        "--categorical",
        action="append",
        default=[],
        metavar="COL",
        help="describe COL as categorical: counts (%%), chi-square test, whatever its values",
    )
    parser.add_argument(
        "--max-categories",
        type=int,
        default=MAX_CATEGORIES,
        metavar="N",
        help=f"skip a categorical column with more distinct values (default {MAX_CATEGORIES})",
    )
    parser.add_argument(
        "--welch", action="store_true", help="Welch's t-test instead of Student's (the paper's)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _names(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip() for v in values for n in v.split(",") if n.strip()))


def _describe(args: argparse.Namespace, ctx: CommandContext) -> int:
    config = load_config(args.config, args.overrides)
    if args.max_categories < 2:
        raise UsageError("--max-categories must be at least 2")
    if args.fold < 1:
        raise UsageError(f"--fold {args.fold}: folds are numbered from 1")
    split = config.data.split
    if not split.file and args.fold > (split.folds or 1):  # a split file's: once it is read
        raise UsageError(f"--fold {args.fold}: the split has {split.folds or 1} fold(s)")
    out = Path(args.out) if args.out else None
    if out is not None:
        check_run_dir(out)  # before reading every image
    components = resolve_components(config, ctx.host)
    show = not args.quiet and ctx.err.is_terminal
    with Progress(enabled=show, console=ctx.err) as progress:

        def images(total: int):
            task = progress.task("reading images", total=total)
            return lambda: progress.advance(task)

        sample_set = read_sample_set(
            components.source_entry,
            components.source_options,
            "data.source",
            components.source_columns,
        )
        data = prepare_data(
            sample_set,
            components.heads,
            config.data,
            config.evaluation.reference_columns,
            progress=images,
            locate=_locator(config.data.roi, ctx),
        )
    data.save_cache()
    if not 1 <= args.fold <= data.n_folds:
        raise UsageError(f"--fold {args.fold}: the split has {data.n_folds} fold(s)")
    heads = components.heads
    excluded = {c for head in heads for c in head.label_columns}
    excluded |= {file for head, file in components.source_columns.items() if head in excluded}
    excluded |= set(config.evaluation.reference_columns.values())
    choice = ColumnChoice(
        columns=_names(args.columns),
        numeric=_names(args.numeric),
        categorical=_names(args.categorical),
        max_categories=args.max_categories,
        welch=args.welch,
    )
    table = describe_data(
        data.for_fold(args.fold - 1), {h.name: h.classes for h in heads}, excluded, choice
    )
    title = f"{sample_set.description or 'the data'}: training and validation vs test"
    ctx.console.print(characteristics_table(table, title))
    for column, reason in table.skipped.items():
        ctx.console.print(f"  [yellow]skipped[/] {shown(column)}: {shown(reason)}")
    for note in table.notes:
        ctx.console.print(f"  note: {shown(note)}")
    for line in table.legend():
        ctx.console.print(f"  {shown(line)}")
    if out is not None:
        document = {"config": str(args.config), "data": sample_set.description}
        with prepare_run_dir(out):
            atomic_write_text(out / "characteristics.csv", table.csv())
            atomic_write_text(
                out / "characteristics.json", to_json({**document, **table.document()})
            )
        ctx.console.print(f"written: {shown(out)}")
    return 0


def characteristics_table(table: Characteristics, title: str) -> Table:
    """The characteristics as the paper's Table 1: one row per characteristic, its levels
    indented below it."""
    out = Table(title=shown(title), title_justify="left")
    out.add_column("Characteristic", min_width=12, overflow="fold")
    for column in COLUMNS:
        out.add_column(TITLES[column], justify="right", no_wrap=True)
    out.add_column("p", justify="right", no_wrap=True)
    out.add_column("test", min_width=7)
    for row in table.rows:
        name = f"  {shown(row.level)}" if row.level else f"[bold]{shown(row.characteristic)}[/]"
        cells = [shown(getattr(row, column)) for column in COLUMNS]
        out.add_row(name, *cells, shown(row.p), shown(row.method))
    return out


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="weights saved by a run (.safetensors)")
    parser.add_argument(
        "--data", required=True, help="YAML with name, source and optionally roi and adapt_bn"
    )
    parser.add_argument("--out", help="write metrics.json and predictions.csv into this folder")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--adapt-bn",
        action=argparse.BooleanOptionalAction,
        help="recompute the model's batch-norm statistics on the set's images before "
        "scoring it, or not (default: the --data file's adapt_bn, else the run's "
        "evaluation.adapt_bn)",
    )
    parser.add_argument(
        "--inference",
        choices=INFERENCE_PATHS,
        help="how the model is run (default: the run's evaluation.inference): "
        + ", ".join(INFERENCE_PATHS),
    )
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
            inference=args.inference,
            adapt_bn=args.adapt_bn,
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
        "data describe": Command(
            "Table 1 of a configuration's data: patients, images, classes and metadata of "
            "training + validation vs test, with t-tests and chi-square tests",
            _describe_arguments,
            _describe,
        ),
        "evaluate": Command(
            "evaluate a trained checkpoint on another data set (external validation)",
            _evaluate_arguments,
            _evaluate,
        ),
    }


def _locator(roi: RoiConfig, ctx: CommandContext):
    """The localiser of ``roi.mode: auto`` (its RoIs are checked like drawn ones), else None."""
    if roi.mode != "auto":
        return None
    return load_localizer(roi.localizer, ctx.host, torch.device("cpu"), refine=roi.refine)
