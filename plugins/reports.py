"""Reports read one finished run result (metrics.json) and present it."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field
from rich.console import Console
from rich.table import Table

from mtlkit import OptionsModel, OutputName, RunResult, atomic_write_text, hookimpl, shown
from mtlkit.text import printable

METRIC_TITLES = {
    "acc": "ACC",
    "se": "SE",
    "sp": "SP",
    "precision": "Prec",
    "f1": "F1",
    "auc": "AUC",
    "reference_auc": "ref. AUC",
}


def format_value(value: Any) -> str:
    """A metric as the paper prints it: ``0.782`` or ``0.782 +- 0.010 (0.753, 0.808)``."""
    if isinstance(value, dict):
        mean, sd = value.get("mean"), value.get("sd")
        if mean is None or (isinstance(mean, float) and math.isnan(mean)):
            return "-"
        if sd is None or (isinstance(sd, float) and math.isnan(sd)):
            return f"{mean:.3f}"
        low, high = value["ci95"]
        return f"{mean:.3f} ± {sd:.3f} ({low:.3f}, {high:.3f})"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_text(text: Any) -> str:
    """``text`` safe inside Markdown (and the HTML it becomes): markup characters are
    backslash-escaped and ``<``, ``>``, ``&`` become entities, so a run or task name
    cannot inject formatting, links, table cells or HTML."""
    out = []
    for char in printable(text):  # control characters as visible escapes
        if char == "&":
            out.append("&amp;")
        elif char == "<":
            out.append("&lt;")
        elif char == ">":
            out.append("&gt;")
        elif char in "\\`*_[]#|~":  # enough to stop emphasis, code, links, cells, headings
            out.append("\\" + char)
        elif char in "\r\n":
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def format_count(value: Any) -> str:
    """An image or patient count; folds of different sizes give a range."""
    if isinstance(value, list):
        return f"{min(value)}-{max(value)} per run"
    return str(value)


def metric_names(tasks: dict[str, dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for metrics in tasks.values():
        names += [m for m in metrics if m not in ("n", "n_positive") and m not in names]
    return names


class SummaryOptions(OptionsModel):
    sets: list[str] | None = Field(
        None, description="which sets to show; default: test and every external set"
    )


def summary_report(options: SummaryOptions):
    """A table per split on the console: every task's metrics."""

    def report(result: RunResult, console: Console) -> None:
        sets = result.metrics["sets"]
        chosen = options.sets or [s for s in sets if s not in ("train", "val")]
        for split in chosen:
            if split not in sets:
                continue
            content = sets[split]
            table = Table(
                title=shown(
                    f"{result.metrics.get('name', '')}: {split} "
                    f"({format_count(content['n_images'])} images, "
                    f"{format_count(content['n_patients'])} patients)"
                )
            )
            table.add_column("task", style="bold")
            table.add_column("n", justify="right")
            names = metric_names(content["tasks"])
            for name in names:
                table.add_column(shown(METRIC_TITLES.get(name, name)), justify="right")
            for task, metrics in content["tasks"].items():
                table.add_row(
                    shown(task),
                    str(metrics.get("n", "")),
                    *(format_value(metrics.get(n)) for n in names),
                )
            console.print(table)
            for relation, share in content.get("consistency", {}).items():
                console.print(
                    shown(f"  inconsistent predictions {relation}: {format_value(share)}")
                )

    return report


class MarkdownOptions(OptionsModel):
    filename: OutputName = Field("report.md", description="file written in the run directory")


def markdown_report(options: MarkdownOptions):
    """report.md in the run directory: the paper-style table of every split."""

    def report(result: RunResult, console: Console) -> None:
        md = markdown_text
        lines = [f"# {md(result.metrics.get('name', 'run'))}", ""]
        seeds = result.metrics.get("seeds") or [result.metrics.get("seed")]
        lines += [
            f"Seeds: {md(', '.join(map(str, seeds)))}. Threshold "
            f"{md(result.metrics.get('threshold'))}. Best epoch by validation "
            f"{md(result.metrics.get('select'))}.",
            "",
        ]
        for split, content in result.metrics["sets"].items():
            names = metric_names(content["tasks"])
            lines += [
                f"## {md(split)}: {md(format_count(content['n_images']))} images, "
                f"{md(format_count(content['n_patients']))} patients",
                "",
                "| task | n | " + " | ".join(md(METRIC_TITLES.get(n, n)) for n in names) + " |",
                "|---|---|" + "---|" * len(names),
            ]
            for task, metrics in content["tasks"].items():
                cells = [md(format_value(metrics.get(n))) for n in names]
                lines.append(f"| {md(task)} | {metrics.get('n', '')} | " + " | ".join(cells) + " |")
            lines.append("")
        atomic_write_text(result.out_dir / options.filename, "\n".join(lines))

    return report


@hookimpl
def mtl_register_reports(registry):
    registry.register("summary", summary_report, options=SummaryOptions)
    registry.register("markdown", markdown_report, options=MarkdownOptions)
