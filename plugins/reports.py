"""Reports read one finished run result (metrics.json) and present it."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field
from rich import box
from rich.console import Console
from rich.table import Table

from mtlkit import (
    OptionsModel,
    OutputName,
    RunResult,
    atomic_write_text,
    finite,
    hookimpl,
    p_value_text,
    shown,
    split_metric_name,
)
from mtlkit.text import printable

METRIC_TITLES = {
    "acc": "ACC",
    "se": "SE",
    "sp": "SP",
    "precision": "Prec",
    "f1": "F1",
    "auc": "AUC",
    "reference_auc": "ref. AUC",
    "raw_auc": "raw AUC",
    "brier": "Brier",
    "ece": "ECE",
}


def adapted_note(content: dict[str, Any]) -> str:
    """``", batch norm adapted to the set"`` for a set scored with its own batch-norm
    statistics (``adapt_bn``), else nothing."""
    return ", batch norm adapted to the set" if content.get("batch_norm") else ""


def format_value(value: Any) -> str:
    """A metric as the paper prints it: ``0.782`` or ``0.782 ± 0.010 (0.753, 0.808)``; ``-``
    for what is undefined or not a number (a results file read back may hold anything)."""
    if isinstance(value, dict):
        mean, sd = finite(value.get("mean")), finite(value.get("sd"))
        if math.isnan(mean):
            return "-"
        interval = value.get("ci95")
        low, high = interval if isinstance(interval, list) and len(interval) == 2 else (None,) * 2
        low, high = finite(low), finite(high)
        if math.isnan(sd) or math.isnan(low) or math.isnan(high):
            return f"{mean:.3f}" if math.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"
        return f"{mean:.3f} ± {sd:.3f} ({low:.3f}, {high:.3f})"
    if isinstance(value, str):
        return value
    number = finite(value)
    if math.isnan(number):
        return "-"
    return str(value) if isinstance(value, int) else f"{number:.3f}"


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
    """The columns of a metrics table: every number but the counts (a run's AUC intervals,
    ``[low, high]`` lists, are left to metrics.json) and the per-class values (their own
    table, :func:`class_metrics`)."""
    names: list[str] = []
    for metrics in tasks.values():
        names += [
            m
            for m, value in metrics.items()
            if m not in ("n", "n_positive")
            and not isinstance(value, list)
            and split_metric_name(m)[1] is None
            and m not in names
        ]
    return names


def class_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A task's per-class values (``auc[luminal A]``) as ``{class: {metric: value}}``, the
    classes in the order metrics.json holds them."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        metric, class_name = split_metric_name(key)
        if class_name is not None:
            out.setdefault(class_name, {})[metric] = value
    return out


def class_table(rows: list[tuple[str, str, dict[str, Any]]], side_by_side: bool) -> Table | None:
    """The per-class metrics of the tasks of ``rows`` that have any, one row per class; None
    when no task has one."""
    per_task = [(task, model, class_metrics(m)) for task, model, m in rows]
    per_task = [row for row in per_task if row[2]]
    if not per_task:
        return None
    names = list(
        dict.fromkeys(m for _, _, classes in per_task for v in classes.values() for m in v)
    )
    table = Table(title="per class (one-vs-rest)", box=box.SIMPLE_HEAD)
    table.add_column("task", style="bold")
    if side_by_side:
        table.add_column("model")
    table.add_column("class")
    for name in names:
        table.add_column(shown(METRIC_TITLES.get(name, name)), justify="right")
    for task, model, classes in per_task:
        for class_name, values in classes.items():
            table.add_row(
                shown(task),
                *([shown(model)] if side_by_side else []),
                shown(class_name),
                *(format_value(values.get(n)) for n in names),
            )
    return table


CNN = "CNN"
"""How reports name the multi-task CNN beside the baselines."""


def models_of(result: RunResult) -> list[tuple[str, dict[str, Any]]]:
    """``(model, metrics.json content)`` of the CNN, when it ran, then of every baseline."""
    models = [(CNN, result.metrics)] if result.metrics.get("sets") else []
    return models + list(result.baselines.items())


def ensemble_of(metrics: Any) -> tuple[str, dict[str, Any], int] | None:
    """The ``ensemble`` block of a metrics.json (``evaluation.ensemble``), as files read
    back may hold it: its name (``ensemble of 3 seeds``), its well-formed sets and the
    number of folds it summarises (1: the sets hold one ensemble's numbers); None
    without one."""
    block = metrics.get("ensemble") if isinstance(metrics, dict) else None
    if not isinstance(block, dict) or not isinstance(block.get("sets"), dict):
        return None
    sets = {
        str(name): content
        for name, content in block["sets"].items()
        if isinstance(content, dict) and isinstance(content.get("tasks"), dict)
    }
    seeds = block.get("seeds")
    runs = block.get("runs")
    folds = len(runs) if isinstance(runs, dict) and runs else 1
    return f"ensemble of {len(seeds) if isinstance(seeds, list) else '?'} seeds", sets, folds


def with_ensembles(models: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """``models`` with, after each model that has one, its ensemble as a model of its own
    (``CNN, ensemble of 3 seeds``), so that tables show it beside the seeds' mean ± SD."""
    out = []
    for name, metrics in models:
        out.append((name, metrics))
        ensemble = ensemble_of(metrics)
        if ensemble is not None:
            out.append((f"{name}, {ensemble[0]}", {"sets": ensemble[1]}))
    return out


def ensemble_note(models: list[tuple[str, dict[str, Any]]]) -> str:
    """How the ensembles of ``models`` were made, one sentence; empty without any."""
    found = [e for e in (ensemble_of(m) for _, m in models) if e is not None]
    if not found:
        return ""
    title, _, folds = found[0]
    text = (
        f"{title.capitalize()}: each image's probabilities averaged over the seeds' models "
        "and scored as one model, beside the seeds' mean ± SD (95% interval)."
    )
    if folds > 1:
        text += (
            f" Each of the {folds} folds has its own ensemble, scored on its own images; "
            "its rows are the mean ± SD over the folds."
        )
    return text


def set_names(models: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Every split and external set any model was evaluated on, in order of appearance."""
    names: list[str] = []
    for _, metrics in models:
        names += [s for s in metrics.get("sets", {}) if s not in names]
    return names


def task_rows(
    models: list[tuple[str, dict[str, Any]]], split: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(task, model, metrics)`` rows of one split, each task's models side by side."""
    present = [(name, m["sets"][split]) for name, m in models if split in m.get("sets", {})]
    tasks: list[str] = []
    for _, content in present:
        tasks += [t for t in content["tasks"] if t not in tasks]
    return [
        (task, name, content["tasks"][task])
        for task in tasks
        for name, content in present
        if task in content["tasks"]
    ]


def run_name(result: RunResult) -> str:
    return result.metrics.get("name") or next(
        (m.get("name", "") for m in result.baselines.values()), ""
    )


class SummaryOptions(OptionsModel):
    sets: list[str] | None = Field(
        None, description="which sets to show; default: test and every external set"
    )


def summary_report(options: SummaryOptions):
    """A table per split on the console: every task's metrics, the CNN's and every
    baseline's side by side."""

    def report(result: RunResult, console: Console) -> None:
        if result.ablation is not None:  # mtl ablate prints the ablation's own tables
            return
        models = with_ensembles(models_of(result))
        side_by_side = bool(result.baselines) or len(models) > len(models_of(result))
        sets = set_names(models)
        chosen = options.sets or [s for s in sets if s not in ("train", "val")]
        for split in chosen:
            rows = task_rows(models, split)
            if not rows:
                continue
            content = next(m["sets"][split] for _, m in models if split in m.get("sets", {}))
            table = Table(
                title=shown(
                    f"{run_name(result)}: {split} "
                    f"({format_count(content['n_images'])} images, "
                    f"{format_count(content['n_patients'])} patients{adapted_note(content)})"
                ),
                # one column more than the CNN's alone: without vertical rules and with
                # collapsed padding it still fits an 80-column console
                **(
                    {"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True}
                    if side_by_side
                    else {}
                ),
            )
            if side_by_side:  # the names in full: narrow consoles shrink the numbers first
                table.add_column("task", style="bold", min_width=max(len(t) for t, _, _ in rows))
                table.add_column("model", min_width=max(len(m) for _, m, _ in rows))
            else:
                table.add_column("task", style="bold")
            table.add_column("n", justify="right")
            names = metric_names({f"{t}/{m}": row for t, m, row in rows})
            for name in names:
                table.add_column(shown(METRIC_TITLES.get(name, name)), justify="right")
            for task, model, metrics in rows:
                table.add_row(
                    shown(task),
                    *([shown(model)] if side_by_side else []),
                    str(metrics.get("n", "")),
                    *(format_value(metrics.get(n)) for n in names),
                )
            console.print(table)
            per_class = class_table(rows, side_by_side)
            if per_class is not None:
                console.print(per_class)
            for model, metrics in models:
                consistency = metrics.get("sets", {}).get(split, {}).get("consistency", {})
                for relation, share in consistency.items():
                    who = f" ({model})" if side_by_side else ""
                    console.print(
                        shown(f"  inconsistent predictions {relation}{who}: {format_value(share)}")
                    )

    return report


class MarkdownOptions(OptionsModel):
    filename: OutputName = Field("report.md", description="file written in the run directory")


def markdown_report(options: MarkdownOptions):
    """report.md in the run directory: the paper-style table of every split, with the CNN
    and every baseline side by side."""

    def report(result: RunResult, console: Console) -> None:
        md = markdown_text
        trained = models_of(result)
        models = with_ensembles(trained)
        side_by_side = bool(result.baselines) or len(models) > len(trained)
        first = models[0][1] if models else {}
        lines = [f"# {md(run_name(result) or 'run')}", ""]
        seeds = first.get("seeds") or [first.get("seed")]
        text = f"Seeds: {md(', '.join(map(str, seeds)))}. Threshold {md(first.get('threshold'))}."
        if result.metrics.get("select"):
            text += f" Best epoch by validation {md(result.metrics.get('select'))}."
        if result.baselines:
            text += (
                f" Models: {md(', '.join(name for name, _ in trained))}, trained on the same "
                "training split and evaluated on the same images."
            )
        if ensemble_note(trained):
            text += f" {md(ensemble_note(trained))}"
        lines += [text, ""]
        for split in set_names(models):
            rows = task_rows(models, split)
            content = next(m["sets"][split] for _, m in models if split in m.get("sets", {}))
            names = metric_names({f"{t}/{m}": row for t, m, row in rows})
            model_cell = " model |" if side_by_side else ""
            lines += [
                f"## {md(split)}: {md(format_count(content['n_images']))} images, "
                f"{md(format_count(content['n_patients']))} patients{md(adapted_note(content))}",
                "",
                f"| task |{model_cell} n | "
                + " | ".join(md(METRIC_TITLES.get(n, n)) for n in names)
                + " |",
                "|---|" + ("---|" if side_by_side else "") + "---|" + "---|" * len(names),
            ]
            for task, model, metrics in rows:
                cells = [md(format_value(metrics.get(n))) for n in names]
                model_text = f" {md(model)} |" if side_by_side else ""
                lines.append(
                    f"| {md(task)} |{model_text} {metrics.get('n', '')} | "
                    + " | ".join(cells)
                    + " |"
                )
            lines.append("")
            lines += class_markdown(rows, side_by_side)
        if result.comparison:
            lines += comparison_markdown(
                result.comparison, "models", "model", "CNN against the baselines"
            )
        if result.ablation:
            lines += comparison_markdown(result.ablation, "variants", "variant", "Ablation")
        atomic_write_text(result.out_dir / options.filename, "\n".join(lines))

    return report


def class_markdown(rows: list[tuple[str, str, dict[str, Any]]], side_by_side: bool) -> list[str]:
    """The per-class metrics of the tasks of ``rows`` as a Markdown table (as the summary's
    :func:`class_table`); no lines when no task has any."""
    md = markdown_text
    per_task = [(task, model, class_metrics(m)) for task, model, m in rows]
    per_task = [row for row in per_task if row[2]]
    if not per_task:
        return []
    names = list(dict.fromkeys(m for _, _, per in per_task for row in per.values() for m in row))
    model_cell = " model |" if side_by_side else ""
    lines = [
        "Per class (one-vs-rest):",
        "",
        f"| task |{model_cell} class | "
        + " | ".join(md(METRIC_TITLES.get(n, n)) for n in names)
        + " |",
        "|---|" + ("---|" if side_by_side else "") + "---|" + "---|" * len(names),
    ]
    for task, model, classes in per_task:
        model_text = f" {md(model)} |" if side_by_side else ""
        for class_name, values in classes.items():
            cells = " | ".join(md(format_value(values.get(n))) for n in names)
            lines.append(f"| {md(task)} |{model_text} {md(class_name)} | {cells} |")
    return [*lines, ""]


COMPARED_METRICS = ("acc", "se", "sp", "precision", "f1", "auc", "reference_auc", "raw_auc")


def share_text(row: Any) -> str:
    """A share over runs in %: ``4.2 ± 1.0%``."""
    mean = finite(row.get("mean")) if isinstance(row, dict) else math.nan
    if math.isnan(mean):
        return "-"
    sd = finite(row.get("sd"))
    return f"{100 * mean:.1f}" + ("" if math.isnan(sd) else f" ± {100 * sd:.1f}") + "%"


def _rows(value: Any) -> dict[str, dict[str, Any]]:
    return (
        {str(k): v for k, v in value.items() if isinstance(v, dict)}
        if isinstance(value, dict)
        else {}
    )


def share_with_p(row: Any) -> str:
    """A share with its p-value when it has one: ``4.2 ± 1.0% (p 0.031)``."""
    p = p_value_text(row)
    return share_text(row) + ("" if p == "-" else f" (p {p})")


def compared_models(document: Any, key: str) -> dict[str, dict[str, Any]]:
    """The models of comparison.json (``key`` ``models``) or ablation.json (``variants``),
    read back, with only well-formed entries kept: ``{name: {"metrics": {task: {metric:
    row}}, "consistency": {relation: row}}}``, every row a dict."""
    models = document.get(key) if isinstance(document, dict) else None
    out = {}
    for name, model in _rows(models).items():
        out[name] = {
            "metrics": {task: _rows(rows) for task, rows in _rows(model.get("metrics")).items()},
            "consistency": _rows(model.get("consistency")),
        }
    return out


def comparison_markdown(document: dict[str, Any], key: str, what: str, title: str) -> list[str]:
    """Markdown tables of compared models (comparison.json, ablation.json): per task, every
    metric as mean ± SD (95% interval) with the AUC's p-value against the reference, then
    the inconsistency shares with their p-values."""
    md = markdown_text
    models = compared_models(document, key)
    if not models:
        return []
    tests = sorted(
        {
            row["test"]
            for model in models.values()
            for rows in model["metrics"].values()
            for row in rows.values()
            if isinstance(row, dict) and isinstance(row.get("test"), str)
        }
    )
    lines = [
        f"## {md(title)} ({md(document.get('split', 'test'))})",
        "",
        f"Mean ± SD (95% interval) over runs; p: against {md(document.get('reference'))} "
        f"({md(', '.join(tests) or 'no test')}).",
        "",
    ]
    tasks = list(dict.fromkeys(t for m in models.values() for t in m["metrics"]))
    for task in tasks:
        present = [
            n
            for n in COMPARED_METRICS
            if any(n in (m["metrics"].get(task) or {}) for m in models.values())
        ]
        lines += [
            f"### {md(task)}",
            "",
            f"| {what} | "
            + " | ".join(md(METRIC_TITLES.get(n, n)) for n in present)
            + " | p (AUC) |",
            "|---|" + "---|" * (len(present) + 1),
        ]
        for name, model in models.items():
            rows = model["metrics"].get(task)
            if isinstance(rows, dict):
                cells = [md(format_value(rows.get(n))) for n in present]
                lines.append(
                    f"| {md(name)} | " + " | ".join(cells) + f" | {p_value_text(rows.get('auc'))} |"
                )
        lines.append("")
    relations = list(
        dict.fromkeys(
            r
            for m in models.values()
            for r in m["consistency"]
            if "_without_" in r or r.startswith("nonmonotonic")
        )
    )
    if relations:
        lines += [
            "### Inconsistent predictions",
            "",
            f"| {what} | " + " | ".join(md(r) for r in relations) + " |",
            "|---|" + "---|" * len(relations),
        ]
        for name, model in models.items():
            shares = model["consistency"]
            if any(r in shares for r in relations):
                cells = [share_with_p(shares.get(r)) for r in relations]
                lines.append(f"| {md(name)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


@hookimpl
def mtl_register_reports(registry):
    registry.register("summary", summary_report, options=SummaryOptions)
    registry.register("markdown", markdown_report, options=MarkdownOptions)
