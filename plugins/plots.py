"""The paper's figures from a run's files, with matplotlib (headless Agg): ROC curves with
the AUC and its 95% CI (Figure 3), confusion matrices, training curves, the share of
inconsistent predictions per constraint link (Figure 4) and the CAM response against the
distance to the lesion (Supplementary Figure S1). PNG and SVG in ``plots/``.

Everything is read from the run directory (:class:`RunFiles`), so ``mtl report`` redraws
the same figures without the model or the data; the files carry no date, so redrawing
gives identical bytes.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless; before anything imports pyplot

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pydantic import Field  # noqa: E402
from rich.console import Console  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from mtlkit import (  # noqa: E402
    OptionsModel,
    RunResult,
    atomic_write_bytes,
    binary_auc,
    bootstrap_ci,
    finite,
    hookimpl,
    positive_at,
    to_json,
)
from mtlkit.plugins.run_files import RunFiles, read_run  # noqa: E402

PLOTS_DIR = "plots"
STYLE = {
    "svg.hashsalt": "mtlkit",  # fixed element ids: the same figure gives the same SVG
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
}
COLORS = ["#1f5f8b", "#d1495b", "#00798c", "#edae49", "#66a182", "#8d96a3", "#6a4c93"]
BOOTSTRAP = 2000  # resamples for the AUC interval of a model that metrics.json lacks


@dataclass
class Plot:
    """One figure written into plots/: its file stem, title and a caption for the report."""

    name: str
    title: str
    caption: str
    png: Path
    svg: Path
    section: str = "results"
    extra: dict[str, Any] = field(default_factory=dict)


def save(figure: Figure, folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``figure`` as ``name``.png and ``name``.svg without a date or software stamp."""
    paths = []
    for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        buffer = io.BytesIO()
        with matplotlib.rc_context(STYLE):
            figure.savefig(buffer, format=fmt, metadata=metadata, bbox_inches="tight")
        path = folder / f"{name}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths[0], paths[1]


def new_figure(panels: int, width: float = 3.4, height: float = 3.2, cols: int = 3):
    """A figure with ``panels`` axes in a grid of at most ``cols`` columns."""
    cols = max(1, min(cols, panels))
    rows = math.ceil(panels / cols)
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
        axes = [figure.add_subplot(rows, cols, i + 1) for i in range(panels)]
    return figure, axes


# --- reading predictions ---------------------------------------------------------------


def column_values(rows: list[dict[str, str]], column: str) -> np.ndarray:
    """A predictions column as floats (NaN where empty)."""
    return np.array(
        [float(r[column]) if r.get(column) not in (None, "") else math.nan for r in rows]
    )


def task_classes(columns: list[str], task: str) -> list[str] | None:
    """A multiclass task's classes from its ``<task>_prob_<class>`` columns, else None."""
    prefix = f"{task}_prob_"
    classes = [c[len(prefix) :] for c in columns if c.startswith(prefix)]
    return classes or None


def other_models(columns: list[str], task: str) -> list[str]:
    """Other models scored in the same file: ``<model>.<task>_prob`` columns (a baseline
    such as ``radiomics.bm_prob``)."""
    pattern = re.compile(rf"^(.+)\.{re.escape(task)}_prob$")
    return [m.group(1) for c in columns if (m := pattern.match(c))]


def auc_label(
    name: str,
    y: np.ndarray,
    p: np.ndarray,
    summary: Any = None,
    interval: Any = None,
    patients: list[str] | None = None,
) -> str:
    """``name  AUC 0.812 (95% CI 0.761-0.860)``: from metrics.json with several seeds (mean
    and interval of the runs); for one run its bootstrap ``interval`` from metrics.json,
    else the stratified bootstrap over ``patients`` (or images), as metrics.json's."""
    if isinstance(summary, dict) and summary.get("mean") is not None:
        low, high = summary.get("ci95") or (math.nan, math.nan)
        return f"{short(name)}\nAUC {summary['mean']:.3f} (95% CI {low:.3f}-{high:.3f}, runs)"
    auc = binary_auc(y, p)
    if isinstance(interval, list) and len(interval) == 2 and all(_isfinite(v) for v in interval):
        low, high = interval
    else:
        _, low, high, _ = bootstrap_ci(y, p, "auc", patients, BOOTSTRAP, seed=0)
    return f"{short(name)}\nAUC {auc:.3f} (95% CI {low:.3f}-{high:.3f})"


def _isfinite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def short(name: str, limit: int = 28) -> str:
    """A legend entry's name, cut to fit beside the axes."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def groups_of(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Rows per repeated run (``seed``/``fold`` columns), or one group."""
    keys = [k for k in ("fold", "seed") if rows and k in rows[0]]
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault("/".join(row[k] for k in keys), []).append(row)
    return groups


# --- figures ---------------------------------------------------------------------------


def roc_figure(run: RunFiles, split: str, others: list[RunFiles]) -> Figure | None:
    """One panel per task: the ROC of this run on ``split`` (a thin line per seed with
    several), every other model in predictions.csv and every compared run."""
    rows = [r for r in run.predictions if r.get("split") == split]
    tasks = [t for t in run.image_tasks if task_classes(run.columns, t) is None]
    if not rows or not tasks:
        return None
    figure, axes = new_figure(len(tasks))
    for ax, task in zip(axes, tasks, strict=False):
        summary = run.metric(split, task, "auc")
        interval = run.metric(split, task, "auc_ci_bootstrap")
        curves: list[tuple[str, list[dict[str, str]], str]] = [(run.label, rows, f"{task}_prob")]
        curves += [(m, rows, f"{m}.{task}_prob") for m in other_models(run.columns, task)]
        for other in others:
            theirs = [r for r in other.predictions if r.get("split") == split]
            if theirs and f"{task}_prob" in other.columns:
                curves.append((other.label, theirs, f"{task}_prob"))
        for index, (name, part, column) in enumerate(curves):
            color = COLORS[index % len(COLORS)]
            y, p = column_values(part, f"{task}_label"), column_values(part, column)
            known = ~np.isnan(y) & ~np.isnan(p)
            y, p = y[known].astype(int), p[known]
            if len(np.unique(y)) < 2:
                continue
            kept = [r for r, k in zip(part, known, strict=True) if k]
            groups = groups_of(kept) if index == 0 else {}
            if len(groups) > 1:  # repeated runs: every run's curve, thin
                for members in groups.values():
                    gy = column_values(members, f"{task}_label").astype(int)
                    gp = column_values(members, column)
                    if len(np.unique(gy)) == 2:
                        fpr, tpr, _ = roc_curve(gy, gp)
                        ax.plot(fpr, tpr, color=color, lw=0.7, alpha=0.45)
            fpr, tpr, _ = roc_curve(y, p)
            patients = (
                [r.get("patient_id", "") for r in kept]
                if kept and "patient_id" in kept[0]
                else None
            )
            own = index == 0
            label = auc_label(
                name, y, p, summary if own else None, interval if own else None, patients
            )
            ax.plot(fpr, tpr, color=color, lw=1.8, label=label)
        ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8, ls="--")
        ax.set(
            title=f"{task} ({split})",
            xlabel="1 - specificity (false-positive rate)",
            ylabel="sensitivity (true-positive rate)",
            xlim=(0, 1),
            ylim=(0, 1.01),
            aspect="equal",
        )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=6.5, frameon=False)
        else:
            ax.text(0.5, 0.55, "one class only: no ROC", ha="center", color="#888888")
    return figure


def confusion_figure(run: RunFiles, split: str) -> Figure | None:
    """One panel per task: image counts of true against predicted class at the threshold
    (summed over repeated runs)."""
    rows = [r for r in run.predictions if r.get("split") == split]
    if not rows or not run.image_tasks:
        return None
    threshold = float(run.metrics.get("threshold", 0.5))
    figure, axes = new_figure(len(run.image_tasks), width=2.9, height=2.7)
    for ax, task in zip(axes, run.image_tasks, strict=False):
        classes = task_classes(run.columns, task)
        if classes is None:
            names = ["negative", "positive"]
            y = column_values(rows, f"{task}_label")
            p = column_values(rows, f"{task}_prob")
            known = ~np.isnan(y)
            truth, predicted = y[known].astype(int), positive_at(p[known], threshold).astype(int)
        else:
            names = classes
            truth_names = [r[f"{task}_label"] for r in rows]
            probs = np.stack([column_values(rows, f"{task}_prob_{c}") for c in classes], axis=1)
            known = np.array([t != "" for t in truth_names])
            truth = np.array([classes.index(t) for t in truth_names if t != ""], dtype=int)
            predicted = np.argmax(probs[known], axis=1) if known.any() else truth
        counts = np.zeros((len(names), len(names)), dtype=int)
        np.add.at(counts, (truth, predicted), 1)
        ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(counts.max(), 1))
        for (i, j), value in np.ndenumerate(counts):
            dark = value > counts.max() * 0.6
            ax.text(j, i, str(value), ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 2 else 0)
        ax.set_yticks(range(len(names)), names)
        subtitle = f"threshold {threshold:g}" if classes is None else "most probable class"
        ax.set(title=f"{task} ({subtitle})", xlabel="predicted", ylabel="true")
        ax.spines[:].set_visible(False)
    return figure


def training_figure(run: RunFiles) -> Figure | None:
    """Per epoch: training loss per task, the constraint term, the validation metrics and
    the learning rate (the first run's history when there are several)."""
    history = run.history
    if not history:
        return None
    epochs = [h["epoch"] for h in history]
    figure, axes = new_figure(4, width=4.2, height=3.0, cols=2)
    loss_ax, constraint_ax, val_ax, lr_ax = axes
    tasks = list(history[0].get("task_losses", {}))
    for index, task in enumerate(tasks):
        values = [h["task_losses"].get(task) for h in history]
        loss_ax.plot(epochs, values, color=COLORS[index % len(COLORS)], label=task)
    loss_ax.set(title="training loss per task", xlabel="epoch", ylabel="mean loss")
    loss_ax.legend(fontsize=6.5, frameon=False)
    constraint_ax.plot(epochs, [h.get("constraint_loss") for h in history], color=COLORS[1])
    constraint_ax.set(title="constraint term", xlabel="epoch", ylabel="mean constraint loss")
    select = str(run.metrics.get("select") or "mean.auc")
    metric = select.split(".", 1)[-1]
    for index, task in enumerate(tasks):
        values = [finite(h.get("val_metrics", {}).get(task, {}).get(metric)) for h in history]
        val_ax.plot(epochs, values, color=COLORS[index % len(COLORS)], lw=1, label=task)
    val_ax.plot(
        epochs, [finite(h.get("val_score")) for h in history], color="black", lw=2, label=select
    )
    best = run.metrics.get("best_epoch")
    if isinstance(best, int):
        val_ax.axvline(best, color="#888888", ls=":", lw=1)
    val_ax.set(title=f"validation {metric}", xlabel="epoch", ylabel=metric)
    val_ax.legend(fontsize=6.5, frameon=False)
    lr_ax.plot(epochs, [h.get("lr") for h in history], color=COLORS[2])
    if all((h.get("lr") or 0) > 0 for h in history):
        lr_ax.set_yscale("log")
    lr_ax.set(title="learning rate", xlabel="epoch", ylabel="learning rate")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    return figure


def share_value(value: Any) -> float:
    """A share from metrics.json: a number, or the mean of repeated runs."""
    if isinstance(value, dict):
        value = value.get("mean")
    return finite(value)


def inconsistency_figure(run: RunFiles, others: list[RunFiles]) -> Figure | None:
    """The paper's inconsistency error (child positive, parent negative at the threshold)
    per relation and set, this run beside every compared run (e.g. an ablation trained
    without the constraint); the other consistency shares are in the tables."""
    sets = [s for s in run.sets if s != "train" and run.sets[s].get("consistency")]
    if not sets:
        return None
    relations = [r for r in run.sets[sets[0]]["consistency"] if "_without_" in r]
    if not relations:
        return None
    models = [run, *[o for o in others if o.sets]]
    figure, axes = new_figure(len(sets), width=max(3.2, 1.1 * len(relations) + 1.5), height=3)
    for ax, split in zip(axes, sets, strict=False):
        width = 0.8 / len(models)
        for index, model in enumerate(models):
            shares = model.sets.get(split, {}).get("consistency", {})
            values = [100 * share_value(shares.get(r)) for r in relations]
            xs = np.arange(len(relations)) + (index - (len(models) - 1) / 2) * width
            color = COLORS[index % len(COLORS)]
            bars = ax.bar(xs, values, width, color=color, label=short(model.label))
            ax.bar_label(bars, fmt="%.1f", fontsize=6.5, padding=1)
        ax.set_xticks(range(len(relations)), relations, rotation=20, ha="right")
        ax.set(title=f"inconsistent predictions ({split})", ylabel="share of images (%)")
        ax.set_ylim(0, max(5.0, ax.get_ylim()[1] * 1.15))
        if len(models) > 1:
            ax.legend(fontsize=6.5, frameon=False)
    return figure


def reliability_figure(run: RunFiles, split: str) -> Figure | None:
    """One reliability diagram per set: every binary task's calibration bins (with several
    runs, the first run's, whose bins its own metrics.json holds)."""
    content = run.sets.get(split, {})
    runs = run.metrics.get("runs")
    if not content.get("calibration") and isinstance(runs, dict) and runs:
        first = next(iter(runs.values()))
        content = first.get("sets", {}).get(split, {}) if isinstance(first, dict) else {}
    calibration = content.get("calibration") if isinstance(content, dict) else None
    if not isinstance(calibration, dict) or not calibration:
        return None
    figure, axes = new_figure(1, width=3.8, height=3.6)
    ax = axes[0]
    ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--")
    drawn = 0
    for index, (task, bins) in enumerate(calibration.items()):
        points = [_bin_point(b) for b in (bins if isinstance(bins, list) else [])]
        points = [p for p in points if p is not None]
        if not points:
            continue
        xs, ys, ns = (np.array(v, dtype=float) for v in zip(*points, strict=True))
        metrics = content.get("tasks", {}).get(task, {})
        brier, ece = (share_value(metrics.get(k)) for k in ("brier", "ece"))
        color = COLORS[index % len(COLORS)]
        ax.plot(
            xs, ys, color=color, lw=1.2, label=f"{short(task)} (Brier {brier:.3f}, ECE {ece:.3f})"
        )
        ax.scatter(xs, ys, s=8 + 60 * ns / ns.max(), color=color, zorder=3)
        drawn += 1
    if not drawn:
        return None
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed share")
    ax.set_title(f"reliability ({split})")
    ax.legend(fontsize=6, frameon=False, loc="upper left")
    return figure


def _bin_point(entry: Any) -> tuple[float, float, float] | None:
    """(mean predicted, observed, images) of one reliability bin; None for an empty or
    malformed one."""
    if not isinstance(entry, dict):
        return None
    values = [entry.get(k) for k in ("mean_predicted", "observed", "n")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    return (float(values[0]), float(values[1]), float(values[2])) if values[2] > 0 else None


def cam_response_figure(run: RunFiles) -> Figure | None:
    """Mean CAM value against the distance to the RoI centre (and to the lesion boundary
    when the data has masks), one line per task."""
    response = run.cam_response
    if not response or not response.get("tasks"):
        return None
    tasks = response["tasks"]
    has_lesion = any("lesion" in entry for entry in tasks.values())
    figure, axes = new_figure(2 if has_lesion else 1, width=3.8, height=3, cols=2)
    for index, (task, entry) in enumerate(tasks.items()):
        color = COLORS[index % len(COLORS)]
        centre = entry["centre"]
        style = {"marker": "o", "ms": 3, "color": color, "label": task}
        axes[0].plot(centre["distance"], _nan_list(centre["mean_cam"]), **style)
        if has_lesion and "lesion" in entry:
            lesion = entry["lesion"]
            axes[1].plot(lesion["distance"], _nan_list(lesion["mean_cam"]), **style)
    axes[0].set(
        title=f"CAM response vs distance to RoI centre ({response.get('split', 'test')})",
        xlabel="distance from RoI centre (0 = centre, 1 = edge)",
        ylabel="mean CAM value (0-1)",
        xlim=(0, 1),
    )
    axes[0].legend(fontsize=6.5, frameon=False)
    if has_lesion:
        ring = next(e["lesion"]["ring"] for e in tasks.values() if "lesion" in e)
        ax = axes[1]
        ax.axvspan(-1, 0, color="#f2d7d5", alpha=0.6, lw=0)
        ax.axvspan(0, ring, color="#fdebd0", alpha=0.6, lw=0)
        ax.axvline(0, color="#888888", lw=0.8)
        ax.set(
            title="vs signed distance to the lesion boundary",
            xlabel="distance to boundary (lesion radii; < 0 inside)",
            ylabel="mean CAM value (0-1)",
            xlim=(-1, 2),
        )
        where = ax.get_xaxis_transform()
        ax.text(-0.5, 0.02, "intratumoral", ha="center", transform=where, fontsize=7)
        ax.text(ring / 2, 0.02, "peritumoral", ha="center", transform=where, fontsize=7)
    return figure


def _nan_list(values: list[Any]) -> list[float]:
    return [math.nan if v is None else v for v in values]


# --- all of them -----------------------------------------------------------------------


def write_plots(run: RunFiles, others: list[RunFiles] = ()) -> list[Plot]:
    """Every figure the run's files allow, written into ``plots/``; returns them in the
    order the report shows them."""
    folder = run.root / PLOTS_DIR
    others = list(others)
    made: list[Plot] = []

    def add(figure: Figure | None, name: str, title: str, caption: str, section: str) -> None:
        if figure is None:
            return
        png, svg = save(figure, folder, name)
        made.append(Plot(name, title, caption, png, svg, section))

    for split in [s for s in run.sets if s not in ("train", "val")]:
        add(
            roc_figure(run, split, others),
            f"roc_{_stem(split)}",
            f"ROC curves, {split}",
            "Sensitivity against 1 - specificity per task; the legend gives the AUC with its "
            "95% confidence interval (for one run the stratified bootstrap over patients of "
            "metrics.json, the interval of the runs with several seeds). Thin lines: the "
            "individual runs.",
            "results",
        )
        add(
            confusion_figure(run, split),
            f"confusion_{_stem(split)}",
            f"Confusion matrices, {split}",
            "Number of images per true and predicted class at the decision threshold.",
            "results",
        )
    for split in [s for s in run.sets if s not in ("train", "val")]:
        add(
            reliability_figure(run, split),
            f"reliability_{_stem(split)}",
            f"Reliability, {split}",
            "Observed share of positives against the mean predicted probability in each of "
            "metrics.json's equal-width probability bins (point size: images in the bin); "
            "the diagonal is perfect calibration. The legend gives the Brier score and the "
            "expected calibration error.",
            "results",
        )
    add(
        inconsistency_figure(run, others),
        "inconsistency",
        "Inconsistent predictions",
        "Share of images whose predictions break a relation of the tasks (e.g. ALNM predicted "
        "positive while BM predicted benign), per set.",
        "results",
    )
    add(
        training_figure(run),
        "training",
        "Training curves",
        "Per epoch: the training loss of every task, the constraint term, the validation "
        "metric used to select the best epoch (dotted line) and the learning rate.",
        "training",
    )
    add(
        cam_response_figure(run),
        "cam_response",
        "CAM response against distance",
        "Mean Grad-CAM value over the test images against the distance from the RoI centre "
        "and, with lesion masks, from the lesion boundary (intratumoral vs peritumoral).",
        "cam",
    )
    return made


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)[:60] or "set"


class PlotsOptions(OptionsModel):
    compare: list[str] = Field(
        default_factory=list, description="other run directories drawn on the same axes"
    )


def plots_report(options: PlotsOptions):
    """The figures of the run in plots/ (PNG and SVG), without the HTML report."""

    def report(result: RunResult, console: Console) -> None:
        others = [read_run(Path(p)) for p in options.compare]
        run = read_run(result.out_dir)
        if result.metrics:
            run.metrics = json.loads(to_json(result.metrics))
        write_plots(run, others)

    return report


@hookimpl
def mtl_register_reports(registry):
    registry.register("plots", plots_report, options=PlotsOptions)
