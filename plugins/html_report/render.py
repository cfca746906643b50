"""report.html: one self-contained page per run (images as data URIs, CSS inline, no
script, nothing fetched), made from the run's files only. Every string that comes from
the data, the config or a file is HTML-escaped."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from mtlkit import finite, split_metric_name
from mtlkit.plugins.plots import Plot, share_value
from mtlkit.plugins.reports import adapted_note, class_metrics, ensemble_of
from mtlkit.plugins.run_files import RunFiles

REPORT_FILE = "report.html"
MAX_IMAGE_BYTES = 5 * 1024 * 1024
METRIC_TITLES = {
    "acc": "ACC",
    "se": "SE",
    "sp": "SP",
    "precision": "Precision",
    "f1": "F1",
    "auc": "AUC",
    "reference_auc": "reference AUC",
    "raw_auc": "raw AUC",
    "brier": "Brier score",
    "ece": "ECE",
}
SPLIT_TITLES = {"train": "training", "val": "validation", "test": "test"}
GROUP_TITLES = {
    "TP": "true positive",
    "FP": "false positive",
    "FN": "false negative",
    "TN": "true negative",
    "correct": "correct",
    "wrong": "wrong",
}

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
  color: #1d2733; background: #f4f6f8; margin: 0; }
main { max-width: 1100px; margin: 0 auto; background: #fff; padding: 28px 40px 48px;
  box-shadow: 0 0 12px rgba(0,0,0,.06); }
header { border-bottom: 3px solid #1f5f8b; padding-bottom: 12px; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 4px; color: #1f5f8b; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #dde3e9; }
h3 { font-size: 15px; margin: 20px 0 8px; }
h4 { font-size: 14px; margin: 14px 0 6px; }
.meta { color: #5a6b7b; font-size: 13px; }
.meta span { margin-right: 18px; white-space: nowrap; }
nav { font-size: 13px; margin: 10px 0 0; }
nav a { margin-right: 14px; color: #1f5f8b; text-decoration: none; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e5e9ee; text-align: right;
  white-space: nowrap; }
th { background: #eef2f6; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
td.text { text-align: left; white-space: normal; }
tbody tr:nth-child(even) { background: #fafbfc; }
figure { margin: 12px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e5e9ee; }
figcaption { font-size: 12.5px; color: #5a6b7b; max-width: 900px; }
figcaption b { color: #1d2733; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.gallery figure { margin: 0; width: 168px; }
.gallery figure img { width: 160px; height: 160px; }
.gallery figcaption { font-size: 11.5px; word-break: break-all; }
.tag { display: inline-block; padding: 0 5px; border-radius: 3px; font-size: 11px;
  font-weight: 600; color: #fff; background: #5a6b7b; }
.tag.TP, .tag.correct { background: #2e7d4f; } .tag.TN { background: #1f5f8b; }
.tag.FP, .tag.FN, .tag.wrong { background: #c0392b; }
.warn { background: #fff7e6; border-left: 4px solid #edae49; padding: 6px 12px; margin: 6px 0; }
pre { background: #f6f8fa; border: 1px solid #e5e9ee; padding: 10px 14px; font-size: 12px;
  overflow-x: auto; }
.note { color: #5a6b7b; font-size: 12.5px; }
summary { cursor: pointer; color: #1f5f8b; margin: 6px 0; }
"""


def esc(value: Any) -> str:
    """Any value as HTML text: ``<``, ``>``, ``&`` and quotes become entities."""
    return html.escape(str(value), quote=True)


def format_value(value: Any) -> str:
    """A metric as the paper prints it: ``0.782``, or ``0.782 ± 0.010 (0.753-0.808)`` for
    repeated runs; ``-`` where undefined or not a number (files read back may hold
    anything)."""
    if isinstance(value, dict):
        mean, sd = finite(value.get("mean")), finite(value.get("sd"))
        if math.isnan(mean):
            return "-"
        if math.isnan(sd):
            return f"{mean:.3f}"
        interval = value.get("ci95")
        low, high = interval if isinstance(interval, list) and len(interval) == 2 else (None,) * 2
        low, high = finite(low), finite(high)
        if math.isnan(low) or math.isnan(high):
            return f"{mean:.3f} ± {sd:.3f}"
        return f"{mean:.3f} ± {sd:.3f} ({low:.3f}-{high:.3f})"
    if isinstance(value, str):
        return value
    number = finite(value)
    if math.isnan(number):
        return "-"
    return str(value) if isinstance(value, int) else f"{number:.3f}"


def count_text(value: Any) -> str:
    if isinstance(value, list) and value:
        return f"{min(value)}-{max(value)}"
    return str(value) if value is not None else "-"


def data_uri(path: Path, root: Path) -> str | None:
    """A PNG inside the run directory as a data URI; None for anything outside it, missing
    or too large (a crafted gallery.json cannot embed other files)."""
    try:
        resolved = path.resolve()
        if not resolved.is_relative_to(root.resolve()) or not resolved.is_file():
            return None
        if resolved.stat().st_size > MAX_IMAGE_BYTES:
            return None
        data = resolved.read_bytes()
    except OSError:
        return None
    if not data.startswith(b"\x89PNG"):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def table(headers: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """An HTML table; ``headers`` and cells are escaped here."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="text">{esc(c)}</td>' if i < text_columns else f"<td>{esc(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure_html(plot: Plot, root: Path) -> str:
    uri = data_uri(plot.png, root)
    if uri is None:
        return ""
    return (
        f'<figure><img src="{uri}" alt="{esc(plot.title)}">'
        f"<figcaption><b>{esc(plot.title)}.</b> {esc(plot.caption)}</figcaption></figure>"
    )


def metric_names(tasks: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for metrics in tasks.values():
        if isinstance(metrics, dict):
            names += [  # a run's AUC intervals ([low, high]) are left to metrics.json
                m
                for m, value in metrics.items()
                if m not in ("n", "n_positive")
                and not isinstance(value, list)
                and split_metric_name(m)[1] is None  # per-class values: metrics.json, summary
                and m not in names
            ]
    return names


def class_metrics_table(tasks: dict[str, Any]) -> str:
    """The per-class values (``auc[luminal A]``) of the tasks that have any, one row per task
    and class; empty when none has."""
    per_class = {task: class_metrics(m) for task, m in tasks.items() if isinstance(m, dict)}
    per_class = {task: classes for task, classes in per_class.items() if classes}
    if not per_class:
        return ""
    names = list(dict.fromkeys(n for c in per_class.values() for row in c.values() for n in row))
    rows = [
        [task, class_name, *(format_value(values.get(n)) for n in names)]
        for task, classes in per_class.items()
        for class_name, values in classes.items()
    ]
    headers = ["task", "class", *(METRIC_TITLES.get(n, n) for n in names)]
    return "<p>Per class (one-vs-rest):</p>" + table(headers, rows, text_columns=2)


INTERVALS = {"auc_ci_delong": "DeLong", "auc_ci_bootstrap": "bootstrap"}


def level_text(content: dict[str, Any]) -> str:
    """The confidence level of the set's intervals (``evaluation.statistics.level``) as
    ``95%``."""
    statistics = content.get("statistics")
    level = finite(statistics.get("level")) if isinstance(statistics, dict) else math.nan
    return f"{100 * level:g}%" if 0 < level < 1 else "95%"


def interval_text(value: Any) -> str:
    """A ``[low, high]`` interval of metrics.json as ``0.712-0.845``."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return f"{value[0]:.3f}-{value[1]:.3f}"
    return "-"


def statistics_note(content: dict[str, Any]) -> str:
    """How the intervals were made (the bootstrap's unit and resamples), from metrics.json."""
    statistics = content.get("statistics")
    boot = statistics.get("auc_ci_bootstrap") if isinstance(statistics, dict) else None
    if not isinstance(boot, dict):
        return ""
    return (
        f'<p class="note">AUC intervals: DeLong\'s variance; and the stratified percentile '
        f"bootstrap resampling {esc(boot.get('unit'))}s ({esc(boot.get('resamples'))} "
        f"resamples, seed {esc(boot.get('seed'))}).</p>"
    )


def metrics_table(content: dict[str, Any]) -> str:
    tasks = content.get("tasks") or {}
    names = metric_names(tasks)
    intervals = [
        k for k in INTERVALS if any(isinstance(m, dict) and k in m for m in tasks.values())
    ]
    headers = ["task", "images", "positive", *(METRIC_TITLES.get(n, n) for n in names)]
    headers += [f"AUC {level_text(content)} CI ({INTERVALS[k]})" for k in intervals]
    rows = [
        [
            task,
            count_text(m.get("n")),
            count_text(m.get("n_positive")),
            *(format_value(m.get(n)) for n in names),
            *(interval_text(m.get(k)) for k in intervals),
        ]
        for task, m in tasks.items()
        if isinstance(m, dict)
    ]
    out = table(headers, rows) + statistics_note(content) + class_metrics_table(tasks)
    youden = content.get("at_youden")
    if isinstance(youden, dict) and youden:
        shown_names = metric_names(youden)
        out += "<p>At each task's Youden threshold, chosen on the validation split:</p>" + table(
            ["task", *(METRIC_TITLES.get(n, n) for n in shown_names)],
            [
                [task, *(format_value(m.get(n)) for n in shown_names)]
                for task, m in youden.items()
                if isinstance(m, dict)
            ],
        )
    consistency = content.get("consistency") or {}
    if consistency:
        out += table(
            ["consistency relation", "share of images"],
            [
                [r, format_value(v) if isinstance(v, dict) else _percent(v)]
                for r, v in consistency.items()
            ],
        )
    return out


def _percent(value: Any) -> str:
    number = share_value(value)
    return "-" if math.isnan(number) else f"{100 * number:.1f}%"


def ensemble_html(metrics: Any, split: str) -> str:
    """The ensemble of the seeds on ``split`` (metrics.json's ``ensemble`` block), to
    follow the seeds' own table; empty without one."""
    ensemble = ensemble_of(metrics)
    if ensemble is None or split not in ensemble[1]:
        return ""
    title, sets, folds = ensemble
    note = "Each image's probabilities averaged over the seeds' models, scored as one model"
    note += f"; mean ± SD over the {folds} folds' ensembles." if folds > 1 else "."
    return f'<h4>{esc(title.capitalize())}</h4><p class="note">{esc(note)}</p>' + metrics_table(
        sets[split]
    )


def set_heading(split: str, content: dict[str, Any]) -> str:
    title = SPLIT_TITLES.get(split, split)
    return (
        f"<h3>{esc(title)} set: {esc(count_text(content.get('n_images')))} images, "
        f"{esc(count_text(content.get('n_patients')))} patients"
        f"{esc(adapted_note(content))}</h3>"
    )


def header_html(run: RunFiles) -> str:
    env = run.environment
    git = env.get("git") if isinstance(env.get("git"), dict) else None
    commit = "-"
    if git:
        commit = str(git.get("commit", "-"))[:12] + (" (local changes)" if git.get("dirty") else "")
    date = env.get("started") or "-"
    version = env.get("mtlkit") or run.metrics.get("mtlkit") or "-"
    seeds = run.metrics.get("seeds") or ([run.metrics["seed"]] if "seed" in run.metrics else [])
    parts = [
        ("date", date),
        ("mtlkit", version),
        ("git commit", commit),
        ("seeds", ", ".join(map(str, seeds)) or "-"),
    ]
    if run.metrics.get("folds", 1) not in (None, 1):
        parts.append(("folds", run.metrics["folds"]))
    if run.metrics.get("checkpoint"):
        parts.append(("checkpoint", run.metrics["checkpoint"]))
    meta = "".join(f"<span><b>{esc(k)}:</b> {esc(v)}</span>" for k, v in parts)
    return f'<header><h1>{esc(run.label)}</h1><div class="meta">{meta}</div></header>'


def summary_html(run: RunFiles) -> str:
    m = run.metrics
    facts = []
    if run.tasks:
        facts.append(f"Tasks: {', '.join(run.tasks)}.")
    if m.get("threshold") is not None:
        facts.append(f"Decision threshold {m['threshold']}.")
    if m.get("select"):
        best = m.get("best_epoch")
        best_text = f" (epoch {format_value(best)} of {m.get('epochs', '?')})" if best else ""
        facts.append(f"Best epoch chosen by validation {m['select']}{best_text}.")
    return f"<p>{esc(' '.join(facts))}</p>" if facts else ""


def data_html(run: RunFiles) -> str:
    data = run.environment.get("data") if isinstance(run.environment.get("data"), dict) else {}
    splits = data.get("splits") if isinstance(data.get("splits"), dict) else {}
    parts = []
    if data:
        parts.append(
            f"<p>{esc(data.get('images', '-'))} images of {esc(data.get('patients', '-'))} "
            f"patients; data fingerprint {esc(str(data.get('fingerprint', '-'))[:16])}.</p>"
        )
    if splits:
        order = [s for s in ("train", "val", "test") if s in splits]
        order += [s for s in splits if s not in order]
        parts.append(
            table(
                ["split", "images", "patients"],
                [
                    [
                        SPLIT_TITLES.get(s, s),
                        count_text(splits[s].get("images")),
                        count_text(splits[s].get("patients")),
                    ]
                    for s in order
                ],
            )
        )
        tasks = list(splits[order[0]].get("tasks", {}))
        rows = []
        for task in tasks:
            cells = []
            for split in order:
                counts = splits[split].get("tasks", {}).get(task, {})
                cells.append(f"{counts.get('labelled', '-')} ({counts.get('positive', '-')})")
            rows.append([task, *cells])
        parts.append(
            "<p>Labelled images per task and split (positive in brackets):</p>"
            + table(["task", *(SPLIT_TITLES.get(s, s) for s in order)], rows)
        )
    else:  # an evaluation, or an older run: what metrics.json says
        rows = [
            [SPLIT_TITLES.get(s, s), count_text(c.get("n_images")), count_text(c.get("n_patients"))]
            for s, c in run.sets.items()
            if isinstance(c, dict)
        ]
        if rows:
            parts.append(table(["set", "images", "patients"], rows))
    linked = run.splits.get("linked_patients")
    if isinstance(linked, list):
        parts.append(
            f"<p>{len(linked)} group(s) of patients share near-duplicate or identical images "
            "and were kept in one split.</p>"
            if linked
            else "<p>No patients share near-duplicate or identical images.</p>"
        )
    for warning in data.get("warnings") or []:
        parts.append(f'<div class="warn">{esc(warning)}</div>')
    return "".join(parts) or '<p class="note">No data summary in this run\'s files.</p>'


def results_html(run: RunFiles, plots: list[Plot], internal: bool) -> str:
    """Metrics per set (the held-out splits of the training data or the external sets)."""
    parts = []
    order = [s for s in ("test", "val", "train") if s in run.sets]  # the held-out test first
    for split in order + [s for s in run.sets if s not in order]:
        content = run.sets[split]
        if not isinstance(content, dict) or (split in ("val", "test", "train")) != internal:
            continue
        parts.append(set_heading(split, content))
        parts.append(metrics_table(content))
        parts.append(ensemble_html(run.metrics, split))
    return "".join(parts)


def gallery_html(run: RunFiles) -> str:
    images = run.gallery.get("images") if isinstance(run.gallery.get("images"), list) else []
    if not images:
        return ""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for item in images:
        if isinstance(item, dict):
            by_task.setdefault(str(item.get("task")), []).append(item)
    parts = []
    for task, items in by_task.items():
        cells = []
        for item in items:
            uri = data_uri(run.root / str(item.get("png", "")), run.root)
            if uri is None:
                continue
            group = str(item.get("group", ""))
            probability = item.get("probability")
            if isinstance(probability, dict):
                prob_text = ", ".join(f"{k} {format_value(v)}" for k, v in probability.items())
            else:
                prob_text = f"p = {format_value(probability)}"
            label = item.get("label") if item.get("label") is not None else "unknown"
            cells.append(
                f'<figure><img src="{uri}" alt="Grad-CAM {esc(task)} {esc(item.get("image_id"))}">'
                f'<figcaption><span class="tag {esc(group)}">{esc(GROUP_TITLES.get(group, group))}'
                f"</span> {esc(prob_text)}<br>label {esc(label)}"
                f"<br>{esc(item.get('image_id'))}</figcaption></figure>"
            )
        if cells:
            parts.append(f'<h3>{esc(task)}</h3><div class="gallery">{"".join(cells)}</div>')
    return "".join(parts)


def response_table(run: RunFiles) -> str:
    tasks = run.cam_response.get("tasks") if isinstance(run.cam_response.get("tasks"), dict) else {}
    rows = []
    for task, entry in tasks.items():
        regions = (entry.get("lesion") or {}).get("regions") if isinstance(entry, dict) else None
        if isinstance(regions, dict):
            rows.append(
                [
                    task,
                    *(
                        format_value(regions.get(r))
                        for r in ("intratumoral", "peritumoral", "background")
                    ),
                ]
            )
    if not rows:
        return ""
    ring = next(iter(tasks.values())).get("lesion", {}).get("ring", "")
    return (
        f"<p>Mean CAM value per region (peritumoral: up to {esc(ring)} lesion radii outside "
        "the boundary).</p>" + table(["task", "intratumoral", "peritumoral", "background"], rows)
    )


def others_html(others: list[RunFiles]) -> str:
    parts = []
    for other in others:
        parts.append(f"<h3>{esc(other.label)}</h3>")
        for split, content in other.sets.items():
            if isinstance(content, dict):
                parts.append(set_heading(split, content) + metrics_table(content))
                parts.append(ensemble_html(other.metrics, split))
    return "".join(parts)


def plugins_table(run: RunFiles) -> str:
    plugins = run.environment.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        return ""
    rows = [
        [str(p.get(k, "")) for k in ("kind", "name", "plugin", "distribution", "version")]
        for p in plugins
        if isinstance(p, dict)
    ]
    return "<h3>Components used</h3>" + table(
        ["kind", "name", "plugin", "distribution", "version"], rows, text_columns=5
    )


def render(
    run: RunFiles,
    plots: list[Plot],
    others: list[RunFiles],
    statistics: list[tuple[str, str, str]] = (),
) -> str:
    """The page for ``run`` with its figures ``plots``, the other models ``others``
    (baselines or ablations inside the run directory, compared runs) and the
    ``statistics`` sections ``(anchor, title, html)`` after them."""
    sections: list[tuple[str, str, str]] = []

    def figures(section: str) -> str:
        return "".join(figure_html(p, run.root) for p in plots if p.section == section)

    sections.append(("summary", "Summary", summary_html(run) + data_html(run)))
    results = results_html(run, plots, internal=True)
    result_figures = [p for p in plots if p.section == "results"]
    internal_figures = "".join(
        figure_html(p, run.root)
        for p in result_figures
        if not any(p.name.endswith(f"_{s}") for s in run.sets if s not in ("val", "test"))
    )
    if results:
        sections.append(("results", "Results", results + internal_figures))
    external = results_html(run, plots, internal=False)
    if external:
        external_figures = "".join(
            figure_html(p, run.root)
            for p in result_figures
            if any(p.name.endswith(f"_{s}") for s in run.sets if s not in ("val", "test"))
        )
        sections.append(("external", "External test sets", external + external_figures))
    if others:
        sections.append(("others", "Baselines and compared models", others_html(others)))
    sections += [s for s in statistics if s[2]]
    training = figures("training")
    if training:
        sections.append(("training", "Training", training))
    cam = gallery_html(run)
    if cam or figures("cam"):
        method = esc(run.cam_response.get("method", "gradcam"))
        target = esc(run.cam_response.get("target", "predicted"))
        intro = (
            f'<p class="note">Heatmaps ({method}, explaining the {target} class) of a sample '
            "of test images per task: the most confident true and false positives and "
            "negatives, with the model's probability. Red: regions that raised the "
            "explained output most.</p>"
        )
        sections.append(("cam", "Grad-CAM", intro + cam + figures("cam") + response_table(run)))
    config = (
        f"<details><summary>config.yaml ({run.config_text.count(chr(10))} lines)</summary>"
        f"<pre>{esc(run.config_text)}</pre></details>"
        if run.config_text
        else '<p class="note">No config.yaml in this run.</p>'
    )
    sections.append(("config", "Configuration", config + plugins_table(run)))
    if run.problems:
        notes = "".join(f'<div class="warn">{esc(p)}</div>' for p in run.problems)
        sections.append(("files", "Files that could not be read", notes))

    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{esc(title)}</h2>{content}</section>'
        for key, title, content in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{esc(run.label)}: mtlkit report</title><style>{CSS}</style></head>"
        f"<body><main>{header_html(run)}<nav>{nav}</nav>{body}"
        '<p class="note">Written by mtlkit from the files of this run directory.</p>'
        "</main></body></html>\n"
    )
