"""``mtl ablate CONFIG``: every variant of the config's ablation grid on the same split and
seeds, and the table comparing them (printed, and in ablation.json / ablation.csv)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from rich import box
from rich.table import Table

from mtlkit.cli.base import (
    Command,
    CommandContext,
    add_config_arguments,
    add_output_arguments,
    check_resume,
)
from mtlkit.config.loading import load_config
from mtlkit.errors import UsageError
from mtlkit.evaluation.comparison import p_value_text
from mtlkit.progress import Progress
from mtlkit.runs.ablation import ablate
from mtlkit.text import shown
from mtlkit.training import distributed

SHOWN_METRICS = ("acc", "se", "sp", "precision", "f1", "auc", "raw_auc")
TITLES = {"precision": "Prec", "raw_auc": "raw AUC", "auc": "AUC"}


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_output_arguments(parser, "ablation")


def _ablate(args: argparse.Namespace, ctx: CommandContext) -> int:
    check_resume(args, "ablation")
    return run_ablation(
        load_config(args.config, args.overrides), args.out, args.resume, args.quiet, ctx
    )


def run_ablation(config, out: str | None, resume: bool, quiet: bool, ctx: CommandContext) -> int:
    """Run (or resume) the ablation of ``config`` into ``out`` and print its tables."""
    if distributed.launched_by_torchrun():  # its grid files would be written by every rank
        raise UsageError("mtl ablate runs in one process, not under torchrun")
    with Progress(enabled=not quiet and ctx.err.is_terminal, console=ctx.err) as progress:
        result = ablate(
            config,
            out_dir=out,
            host=ctx.host,
            progress=progress,
            console=ctx.console,
            resume=resume,
        )
    for table in ablation_tables(result.document):
        ctx.console.print(table)
    ctx.console.print(f"ablation directory: {shown(result.out_dir)}")
    return 0


def cell(row: dict[str, Any] | None, percent: bool = False) -> str:
    """``mean ± SD`` (``mean`` for one run), as a share in % for consistency rows."""
    if not row or row.get("mean") is None or math.isnan(row["mean"]):
        return "-"
    scale, unit = (100, "%") if percent else (1, "")
    text = f"{scale * row['mean']:.{1 if percent else 3}f}"
    if row.get("sd") is not None and not math.isnan(row["sd"]):
        text += f" ± {scale * row['sd']:.{1 if percent else 3}f}"
    return text + unit


def ablation_tables(document: dict[str, Any]) -> list[Table]:
    """One table per task (variants x metrics, the AUC's p-value against the reference) and
    one of the paper's inconsistency error per relation."""
    variants = document["variants"]
    tasks = list(dict.fromkeys(t for v in variants.values() for t in v["metrics"]))
    tables = []
    for task in tasks:
        present = [
            m
            for m in SHOWN_METRICS
            if any(m in v["metrics"].get(task, {}) for v in variants.values())
        ]
        versus = shown(document["reference"])
        table = Table(
            title=f"ablation, {shown(task)} ({document['split']}; p: vs {versus})",
            box=box.SIMPLE_HEAVY,
            title_justify="left",
        )
        table.add_column("variant", style="bold")
        for metric in present:
            table.add_column(TITLES.get(metric, metric.upper()), justify="right")
        table.add_column("p (AUC)", justify="right")
        for name, variant in variants.items():
            rows = variant["metrics"].get(task)
            if rows is None:
                continue
            table.add_row(
                shown(name), *(cell(rows.get(m)) for m in present), p_value_text(rows.get("auc"))
            )
        tables.append(table)
    relations = list(
        dict.fromkeys(r for v in variants.values() for r in v["consistency"] if "_without_" in r)
    )
    if relations:
        table = Table(
            title="inconsistent predictions (child positive, parent negative)",
            box=box.SIMPLE_HEAVY,
            title_justify="left",
        )
        table.add_column("variant", style="bold")
        for relation in relations:
            table.add_column(shown(relation), justify="right")
        for name, variant in variants.items():
            shares = variant["consistency"]
            if not any(r in shares for r in relations):
                continue
            table.add_row(
                shown(name),
                *(
                    f"{cell(shares.get(r), percent=True)} (p {p_value_text(shares.get(r))})"
                    if r in shares and shares[r].get("test")
                    else cell(shares.get(r), percent=True)
                    for r in relations
                ),
            )
        tables.append(table)
    return tables


def ablate_commands() -> dict[str, Command]:
    return {
        "ablate": Command(
            "train every variant of the config's ablation grid on one split and compare them",
            _arguments,
            _ablate,
        )
    }
