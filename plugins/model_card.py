"""The ``model_card`` report: ``model_card.md`` in the run directory, a model card (after
Mitchell et al. 2019) made from the run's own files only (config.yaml, metrics.json,
environment.json, splits.json, predictions.csv), so ``mtl report RUN_DIR`` makes the same
card again without the model or the data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from rich.console import Console

from mtlkit import OptionsModel, OutputName, RunResult, atomic_write_text, hookimpl, shown
from mtlkit.plugins.reports import (
    METRIC_TITLES,
    adapted_note,
    format_value,
    markdown_text,
    metric_names,
)
from mtlkit.plugins.run_files import RunFiles, read_run
from mtlkit.plugins.segmentation import SegmentationOptions

CARD_FILE = "model_card.md"
SMALL_TEST_PATIENTS = 100
"""Below this many test patients the card warns that the intervals are wide."""
CARD_METRICS = ("acc", "se", "sp", "precision", "f1", "auc", "brier", "ece", "dice", "iou")
"""The metrics a card shows (those a run has); the rest stay in metrics.json."""

md = markdown_text


class ModelCardOptions(OptionsModel):
    filename: OutputName = Field(CARD_FILE, description="file written in the run directory")


def write_model_card(root: Path, filename: str = CARD_FILE) -> Path:
    """Write the model card of the finished run in ``root`` from its files; returns its
    path."""
    run = read_run(root)
    path = Path(root) / filename
    atomic_write_text(path, model_card(run))
    return path


def model_card(run: RunFiles) -> str:
    """The model card of ``run`` as Markdown."""
    config = _config(run)
    sections = [
        _title(run, config),
        _intended_use(run, config),
        _tasks(run, config),
        _data(run, config),
        _metrics(run),
        _training(run, config),
        _caveats(run, config),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _config(run: RunFiles) -> dict[str, Any]:
    try:
        config = yaml.safe_load(run.config_text) if run.config_text else {}
    except yaml.YAMLError:
        return {}
    return config if isinstance(config, dict) else {}


def _get(mapping: Any, *keys: str, default: Any = None) -> Any:
    """``mapping[k1][k2]...``, or ``default`` where a level is missing (files read back may
    hold anything)."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def _spec(value: Any) -> str:
    """A component's config entry as one line: ``timm (model: resnet10t, pretrained: false)``."""
    if not isinstance(value, dict):
        return md(value)
    name = value.get("type", value.get("name", "?"))
    options = ", ".join(f"{k}: {_plain(v)}" for k, v in value.items() if k not in ("type", "name"))
    return md(f"{name} ({options})" if options else name)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_plain(v)}" for k, v in value.items()) + "}"
    return "null" if value is None else str(value)


def _title(run: RunFiles, config: dict[str, Any]) -> str:
    name = run.metrics.get("name") or config.get("name") or run.root.name
    versions = f"mtlkit {run.environment.get('mtlkit', '?')}"
    git = run.environment.get("git")
    if isinstance(git, dict) and git.get("commit"):
        versions += f", commit {str(git['commit'])[:12]}" + (
            " (with local changes)" if git.get("dirty") else ""
        )
    return (
        f"# Model card: {md(name)}\n\n"
        f"Made by {md(versions)} from the files of this run directory (config.yaml, "
        "metrics.json, environment.json, splits.json); `mtl report RUN_DIR` makes it again."
    )


def _intended_use(run: RunFiles, config: dict[str, Any]) -> str:
    tasks = ", ".join(md(t) for t in run.tasks) or "(none)"
    roi = _get(config, "data", "roi", "mode", default="box")
    return (
        "## Intended use\n\n"
        "- **Research use only.** This model is not a medical device, has not been cleared "
        "or approved by any regulator, and must not inform the diagnosis or treatment of a "
        "patient.\n"
        f"- What it predicts: from one ultrasound image of a breast mass (the lesion's "
        f"region of interest, RoI mode `{md(roi)}`), the tasks {tasks}, described below.\n"
        "- Out of scope: images of other organs or modalities, images without a visible "
        "mass, and populations, scanners or sites unlike the training data (see the caveats)."
    )


def _task_kinds(run: RunFiles) -> dict[str, tuple[str, list[str]]]:
    """Each task's kind and classes, as predictions.csv's columns show them (a task without
    columns predicts a mask)."""
    kinds: dict[str, tuple[str, list[str]]] = {}
    for task in run.tasks:
        classes = [c[len(f"{task}_prob_") :] for c in run.columns if c.startswith(f"{task}_prob_")]
        if f"{task}_prob" in run.columns:
            kinds[task] = ("binary", ["0", "1"])
        elif classes:
            kinds[task] = ("multiclass", classes)
        else:
            kinds[task] = ("segmentation", [])
    return kinds


def _tasks(run: RunFiles, config: dict[str, Any]) -> str:
    heads = config.get("heads") if isinstance(config.get("heads"), list) else []
    specs = dict(zip(run.tasks, heads, strict=True)) if len(heads) == len(run.tasks) else {}
    threshold = run.metrics.get("threshold", _get(config, "evaluation", "threshold"))
    youden = _get(run.metrics, "sets", "val", "at_youden", default={})
    lines = [
        "## Tasks",
        "",
        "| task | kind | head (config) | classes | decision threshold |",
        "|---|---|---|---|---|",
    ]
    for task, (kind, classes) in _task_kinds(run).items():
        if kind == "binary":
            cut = f"{md(threshold)} on the probability"
            chosen = _get(youden, task, "threshold")
            if isinstance(chosen, (int, float)):
                cut += f" (Youden on validation: {chosen:.3f})"
        elif kind == "multiclass":
            cut = "the most probable class"
        else:  # a dense head's pixel threshold, as its spec sets it
            spec = specs.get(task) if isinstance(specs.get(task), dict) else {}
            pixel = spec.get("threshold", SegmentationOptions.model_fields["threshold"].default)
            cut = f"{md(pixel)} per pixel"
        shown_classes = "negative / positive" if kind == "binary" else ", ".join(map(md, classes))
        spec = _spec(specs[task]) if task in specs else "-"
        lines.append(f"| {md(task)} | {kind} | {spec} | {shown_classes or '-'} | {cut} |")
    return "\n".join(lines)


def _data(run: RunFiles, config: dict[str, Any]) -> str:
    data = _get(run.environment, "data", default={})
    source = _get(config, "data", "source", default={})
    lines = ["## Data and splits", ""]
    lines.append(f"- Source: {_spec(source)}.")
    if data:
        lines.append(
            f"- {md(data.get('images', '?'))} images of {md(data.get('patients', '?'))} "
            "patients (after exclusions); data fingerprint "
            f"`{md(str(data.get('fingerprint', '?'))[:16])}`."
        )
    lines.append(f"- How the split was made: {_split_text(config)}")
    lines.append(f"- Duplicates: {_duplicates_text(config)}")
    for warning in data.get("warnings") or []:
        lines.append(f"- Data warning: {md(warning)}")
    splits = data.get("splits") if isinstance(data.get("splits"), dict) else {}
    if splits:
        tasks = [
            t for t in run.tasks if any(t in _get(s, "tasks", default={}) for s in splits.values())
        ]
        lines += [
            "",
            "| split | images | patients | "
            + " | ".join(f"{md(t)} labelled (positive)" for t in tasks)
            + " |",
            "|---|---|---|" + "---|" * len(tasks),
        ]
        for split in (
            "train",
            "val",
            "test",
            *[s for s in splits if s not in ("train", "val", "test")],
        ):
            if split not in splits:
                continue
            content = splits[split]
            cells = []
            for task in tasks:
                counts = _get(content, "tasks", task, default={})
                cells.append(f"{counts.get('labelled', '-')} ({counts.get('positive', '-')})")
            lines.append(
                f"| {md(split)} | {content.get('images', '-')} | {content.get('patients', '-')} | "
                + " | ".join(cells)
                + " |"
            )
        if run.metrics.get("folds", 1) not in (None, 1):
            lines.append("")
            lines.append(f"The counts are those of the first of {run.metrics['folds']} folds.")
    externals = [s for s in run.sets if s not in ("train", "val", "test")]
    if externals:
        lines.append("")
        lines.append(f"External test sets: {', '.join(md(s) for s in externals)}.")
    return "\n".join(lines)


def _split_text(config: dict[str, Any]) -> str:
    split = _get(config, "data", "split", default={})
    if split.get("file"):
        return f"read from the split file {md(split['file'])}."
    stratify = ", ".join(md(t) for t in split.get("stratify") or []) or "nothing"
    text = (
        f"at the patient level (every image of a patient in one split), stratified by "
        f"{stratify}; {_share(split.get('test_fraction'))} of patients for test, "
        f"{_share(split.get('val_fraction'))} for validation (best epoch), split seed "
        f"{md(split.get('seed'))}."
    )
    if split.get("folds"):
        text += f" {md(split['folds'])}-fold cross-validation: each fold tests other patients."
    return text


def _share(value: Any) -> str:
    return f"{100 * value:g}%" if _number(value) else md(value)


def _duplicates_text(config: dict[str, Any]) -> str:
    duplicates = _get(config, "data", "duplicates", default={})
    if not duplicates.get("detect", True):
        return "detection is off: near-duplicate images may fall into different splits."
    return (
        f"near-duplicate images (perceptual hash {md(duplicates.get('method', '?'))}, "
        f"distance <= {md(duplicates.get('max_distance', '?'))}) are grouped with their "
        "patients before the split, so no group spans two splits."
    )


def _metrics(run: RunFiles) -> str:
    repeated = "runs" in run.metrics
    n_runs = len(run.metrics.get("runs") or {}) if repeated else 1
    if repeated:
        note = (
            f"Mean ± SD over {n_runs} runs (folds and seeds) with the 95% interval "
            "mean ± t(0.975, n-1) x SD, as Li et al. 2022 report them."
        )
    else:
        note = (
            "One run; the AUC's 95% intervals: DeLong's, and the stratified bootstrap's "
            "over patients where the run computed it."
        )
    lines = ["## Metrics", "", note, f"Threshold {md(run.metrics.get('threshold', '-'))}."]
    order = [s for s in ("test", "val") if s in run.sets] + [
        s for s in run.sets if s not in ("test", "val", "train")
    ]
    for split in order:
        content = run.sets[split]
        tasks = content.get("tasks") if isinstance(content.get("tasks"), dict) else {}
        names = [n for n in metric_names(tasks) if n in CARD_METRICS]
        lines += [
            "",
            f"### {md(split)}: {md(content.get('n_images', '?'))} images, "
            f"{md(content.get('n_patients', '?'))} patients{md(adapted_note(content))}",
            "",
            "| task | n | " + " | ".join(md(METRIC_TITLES.get(n, n)) for n in names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for task, metrics in tasks.items():
            cells = [_metric_cell(metrics, n) for n in names]
            lines.append(
                f"| {md(task)} | {md(metrics.get('n', '-'))} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines)


def _metric_cell(metrics: dict[str, Any], name: str) -> str:
    """A metric with its interval: ``mean ± SD (low, high)`` over runs; a single run's AUC
    with its DeLong (and bootstrap) interval."""
    text = format_value(metrics.get(name))
    if name != "auc" or isinstance(metrics.get(name), dict):
        return md(text)
    intervals = []
    for key, label in (("auc_ci_delong", "DeLong"), ("auc_ci_bootstrap", "bootstrap")):
        interval = metrics.get(key)
        if isinstance(interval, list) and len(interval) == 2 and all(_number(v) for v in interval):
            intervals.append(f"{label} {interval[0]:.3f}, {interval[1]:.3f}")
    return md(f"{text} ({'; '.join(intervals)})" if intervals else text)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _training(run: RunFiles, config: dict[str, Any]) -> str:
    training = config.get("training") if isinstance(config.get("training"), dict) else {}
    augmentation = (
        training.get("augmentation") if isinstance(training.get("augmentation"), dict) else {}
    )
    seeds = config.get("seed")
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if augmentation.get("enabled", True):
        extras = {k: v for k, v in augmentation.items() if k != "enabled"}
        augmented = ", ".join(f"{k} {_plain(v)}" for k, v in extras.items()) or "the defaults"
    else:
        augmented = "off"
    optimizer, schedule = _spec(training.get("optimizer")), _spec(training.get("scheduler"))
    constraints = ", ".join(_spec(c) for c in config.get("constraints") or []) or "none"
    select = md(_get(config, "evaluation", "select", default="?"))
    best = f": epoch {md(run.metrics['best_epoch'])}" if "best_epoch" in run.metrics else ""
    environment = run.environment
    lines = [
        "## Training",
        "",
        f"- Backbone: {_spec(config.get('backbone'))}.",
        f"- Constraints: {constraints}; task weighting {_spec(config.get('weighting'))}.",
        f"- {md(training.get('epochs', '?'))} epochs, batch "
        f"{md(training.get('batch_size', '?'))}, optimiser {optimizer}, schedule {schedule}.",
        f"- Best epoch by validation {select}{best}.",
        f"- Seeds: {', '.join(md(s) for s in seeds)}.",
        f"- Images {md(_get(config, 'data', 'image_size', default='?'))} px; augmentation: "
        f"{md(augmented)}.",
        f"- Software: torch {md(environment.get('torch', '?'))}, timm "
        f"{md(environment.get('timm', '?'))}, Python {md(environment.get('python', '?'))}.",
    ]
    return "\n".join(lines)


def _caveats(run: RunFiles, config: dict[str, Any]) -> str:
    source = str(_get(config, "data", "source", "type", default=""))
    caveats = []
    if source == "synthetic":
        caveats.append(
            "**Synthetic data.** The model was trained and evaluated on generated phantoms, "
            "not on patients: its numbers show that the software works and are not "
            "clinically meaningful."
        )
    if source == "busi":
        caveats.append(
            "**BUSI.** The data set has no patient identifiers (images of one patient may "
            "sit in different splits unless near-duplicate groups stand in for patients) "
            "and holds near-duplicate images; its labels are BM only, from one hospital."
        )
    test_patients = _get(run.environment, "data", "splits", "test", "patients")
    if isinstance(test_patients, int) and test_patients < SMALL_TEST_PATIENTS:
        caveats.append(
            f"**Small test set** ({test_patients} patients): the intervals above are wide "
            "and differences between models within them are not evidence."
        )
    if not [s for s in run.sets if s not in ("train", "val", "test")]:
        caveats.append(
            "**No external validation.** Every test image comes from the training data's "
            "source; performance on other scanners, sites and populations is unknown."
        )
    seeds = config.get("seed")
    if not isinstance(seeds, list) or len(seeds) < 2:
        caveats.append("**One seed.** The variability between training runs is not measured.")
    for problem in run.problems:
        caveats.append(f"A run file could not be read: {md(problem)}.")
    if not caveats:
        return ""
    return "## Caveats\n\n" + "\n".join(f"- {c}" for c in caveats)


def model_card_report(options: ModelCardOptions):
    """model_card.md in the run directory: intended use, data and splits, tasks, metrics
    with their intervals, training details and the caveats that follow from the files."""

    def report(result: RunResult, console: Console) -> None:
        if not result.metrics:  # `mtl radiomics`: no CNN to describe
            return
        path = write_model_card(result.out_dir, options.filename)
        console.print(f"model card: {shown(path)}")

    return report


@hookimpl
def mtl_register_reports(registry):
    registry.register("model_card", model_card_report, options=ModelCardOptions)
