"""The ``html`` report (report.html and the figures in plots/, written by every run) and
``mtl report RUN_DIR``, which makes both, and the model card, again from a finished run's
files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.console import Console

from mtlkit import (
    Command,
    CommandContext,
    OptionsModel,
    RunResult,
    UsageError,
    atomic_write_text,
    hookimpl,
    shown,
    to_json,
)
from mtlkit.plugins.html_report.comparison import comparison_html
from mtlkit.plugins.html_report.render import REPORT_FILE, render
from mtlkit.plugins.model_card import write_model_card
from mtlkit.plugins.plots import write_plots
from mtlkit.plugins.run_files import RunFiles, ablation_siblings, other_results, read_run


class HtmlOptions(OptionsModel):
    filename: str = Field(REPORT_FILE, pattern=r"^[A-Za-z0-9_.-]+\.html$", description="file name")
    compare: list[str] = Field(
        default_factory=list, description="other run directories shown beside this one"
    )


def write_report(
    root: Path,
    compare: list[Path] = (),
    filename: str = REPORT_FILE,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Draw the figures and write the report of the run in ``root`` from its files (with
    ``metrics``, the content of metrics.json, given in memory); returns the report's path."""
    run = read_run(root)
    if metrics:  # exactly what metrics.json holds (NaN as null), so mtl report matches
        run.metrics = json.loads(to_json(metrics))
    if not run.metrics:
        raise UsageError(f"{root} has no readable metrics.json: not a finished mtlkit run")
    compared = []
    for other in compare:
        theirs = read_run(Path(other))
        if not theirs.metrics:
            raise UsageError(f"{other} has no readable metrics.json: not a finished mtlkit run")
        compared.append(theirs)
    others: list[RunFiles] = other_results(root) + ablation_siblings(run) + compared
    plots = write_plots(run, others)
    path = root / filename
    statistics = [
        (
            "comparison",
            "CNN against the baselines",
            comparison_html(run.comparison, "models", "model"),
        ),
        ("ablation", "Ablation", comparison_html(run.ablation, "variants", "variant")),
    ]
    atomic_write_text(path, render(run, plots, others, statistics))
    return path


def html_report(options: HtmlOptions):
    """report.html in the run directory: one self-contained page with the metrics, the
    data summary, the figures, the Grad-CAM gallery and the config."""

    def report(result: RunResult, console: Console) -> None:
        if not result.metrics:  # `mtl radiomics`: baselines only, no CNN to report on
            console.print("report: this run trained no CNN; report.html is written for CNN runs")
            return
        compare = [Path(p) for p in options.compare]
        path = write_report(result.out_dir, compare, options.filename, result.metrics)
        console.print(f"report: {shown(path)}")

    return report


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="directory of a finished run (or of mtl evaluate --out)")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="another run drawn on the same axes and tabulated beside it (repeatable)",
    )


def _report(args: argparse.Namespace, ctx: CommandContext) -> int:
    root = Path(args.run_dir)
    if not root.is_dir():
        raise UsageError(f"{args.run_dir} is not a directory")
    path = write_report(root, [Path(p) for p in args.compare])
    ctx.console.print(f"written: {shown(path)}")
    if (root / "splits.json").is_file():  # a training run (not mtl evaluate's folder)
        ctx.console.print(f"written: {shown(write_model_card(root))}")
    return 0


@hookimpl
def mtl_register_reports(registry):
    registry.register("html", html_report, options=HtmlOptions)


@hookimpl
def mtl_register_commands(registry):
    registry.register(
        "report",
        Command(
            "make report.html, the figures and model_card.md again from a finished run's files",
            _report_arguments,
            _report,
        ),
    )
