"""Baselines beside the CNN: prepared once per run, fitted once per fold and seed on the
CNN's own splits, scored with the CNN's metrics and written in the CNN's layout and schema
under the baseline's name (``<run>/<name>/metrics.json``, ``predictions.csv``, ...)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from mtlkit.components.interfaces import Baseline, BaselineContext, BaselineOutput, TaskHead
from mtlkit.components.resolve import Components
from mtlkit.config.schema import RunConfig
from mtlkit.data.prepared import PreparedData
from mtlkit.errors import PluginError
from mtlkit.evaluation.documents import (
    aggregate,
    baseline_metrics_document,
    combine_predictions,
    predictions_csv,
)
from mtlkit.evaluation.ensemble import ensemble_results, evaluated_sets
from mtlkit.evaluation.metrics import score_split
from mtlkit.evaluation.split_statistics import add_youden
from mtlkit.files import ENSEMBLE_PREDICTIONS, atomic_write_bytes, atomic_write_text, to_json
from mtlkit.progress import Progress
from mtlkit.readback import finished_run
from mtlkit.text import shown

CORE_FILES = ("metrics.json", "predictions.csv", "timing.json")
"""Written by the core in every baseline folder; a baseline's own files may not use them."""


@dataclass
class PreparedBaseline:
    """A baseline after :meth:`Baseline.prepare`: the files it returned and its time."""

    baseline: Baseline
    files: dict[str, str | bytes]
    seconds: float


@dataclass(frozen=True)
class RunSlot:
    """One fold and seed of a run: its sub-folder (``""``, ``seed_1``, ``fold_2/seed_1``)
    and the leading columns its rows get in the combined predictions.csv."""

    fold: int
    seed: int
    label: str
    columns: dict[str, str]


def prepare_baselines(
    components: Components,
    config: RunConfig,
    data: PreparedData,
    progress: Progress,
    evaluate: tuple[str, ...],
) -> list[PreparedBaseline]:
    """Run every baseline's :meth:`~Baseline.prepare` (before training and before the run
    directory is written, so that a baseline refusing the data leaves nothing behind)."""
    prepared = []
    if components.baselines and config.evaluation.external:
        _warn(
            progress, "baselines", "external sets (evaluation.external) are scored by the CNN only"
        )
    for baseline in components.baselines:
        context = _context(config, data, components.heads, progress, evaluate)
        started = time.perf_counter()
        output = baseline.prepare(context)
        seconds = time.perf_counter() - started
        _check_files(baseline, output, "prepare")
        for warning in output.warnings:
            _warn(progress, baseline.name, warning)
        prepared.append(PreparedBaseline(baseline, dict(output.files), seconds))
    return prepared


def run_baselines(
    prepared: Sequence[PreparedBaseline],
    slots: Sequence[RunSlot],
    components: Components,
    config: RunConfig,
    data: PreparedData,
    out: Path,
    progress: Progress,
    evaluate: tuple[str, ...],
    resume: bool = False,
) -> dict[str, dict[str, Any]]:
    """Fit and score every prepared baseline on every fold and seed; returns each one's
    metrics.json content (a summary over the runs when there are several)."""
    results = {}
    for item in prepared:
        baseline = item.baseline
        folder = out / baseline.name
        for name, content in item.files.items():
            _write(folder / name, content)
        per_run: dict[str, dict[str, Any]] = {}
        parts: list[tuple[dict[str, str], str]] = []
        members: list[tuple[int, str, str]] = []  # (fold, file, predictions): the ensemble
        fit_seconds: dict[str, float] = {}
        # A baseline trains no constraint: the relations are checked with fresh instances.
        constraints = components.build_constraints()
        for slot in slots:
            run_dir = folder / slot.label if slot.label else folder
            key = slot.label or str(slot.seed)
            done = finished_run(run_dir) if resume else None
            if done is None:
                fold_data = data.for_fold(slot.fold)
                context = _context(config, fold_data, components.heads, progress, evaluate)
                *done, fit_seconds[key] = _fit_one(
                    baseline, slot, context, components, constraints, config, run_dir
                )
            per_run[key], predictions = done
            parts.append((slot.columns, predictions))
            members.append((slot.fold, str(run_dir / "predictions.csv"), predictions))
        ensemble = None
        if config.evaluation.ensemble and len(config.seeds) > 1:  # as for the CNN
            ensemble, ensemble_predictions = ensemble_results(
                members,
                lambda fold: evaluated_sets(data.for_fold(fold), evaluate),
                config.seeds,
                components,
                config.evaluation,
            )
            atomic_write_text(folder / ENSEMBLE_PREDICTIONS, ensemble_predictions)
        metrics = _summary(baseline, config, data, folder, per_run, parts, ensemble)
        timing: dict[str, Any] = {"prepare_seconds": round(item.seconds, 3)}
        if fit_seconds:
            timing["fit_seconds"] = (
                fit_seconds if len(slots) > 1 else next(iter(fit_seconds.values()))
            )
        atomic_write_text(folder / "timing.json", to_json(timing))
        results[baseline.name] = metrics
    return results


def _fit_one(
    baseline: Baseline,
    slot: RunSlot,
    context: BaselineContext,
    components: Components,
    constraints: list,
    config: RunConfig,
    run_dir: Path,
) -> tuple[dict[str, Any], str, float]:
    """Fit ``baseline`` on one fold and seed, score it like the CNN and write its files;
    returns its metrics document, its predictions.csv content and the fit's seconds."""
    data = context.data
    with context.progress.status(f"{baseline.name}: fitting {slot.label or 'the model'}"):
        started = time.perf_counter()
        output = baseline.fit(context, slot.seed)
        seconds = round(time.perf_counter() - started, 3)
    _check_files(baseline, output, "fit")
    for warning in output.warnings:
        _warn(context.progress, baseline.name, warning)
    probabilities = _checked_probabilities(baseline, output, context)
    evals = {
        split: score_split(
            data,
            data.indices(split),
            split,
            components.heads,
            probabilities[split],
            components.metrics,
            constraints,
            config.evaluation.threshold,
            relations=components.consistency,
            margin=config.evaluation.consistency_margin,
            statistics=config.evaluation.statistics,
        )
        for split in probabilities
    }
    if config.evaluation.statistics.youden:
        add_youden(evals, components.heads, components.metrics)
    document = baseline_metrics_document(config, baseline.name, slot.seed, evals)
    if data.n_folds > 1:
        document["fold"] = slot.fold + 1
    predictions = predictions_csv([e.predictions for e in evals.values()], components.heads)
    for name, content in output.files.items():
        _write(run_dir / name, content)
    atomic_write_text(run_dir / "predictions.csv", predictions)
    if slot.label:
        atomic_write_text(run_dir / "timing.json", to_json({"fit_seconds": seconds}))
    atomic_write_text(run_dir / "metrics.json", to_json(document))  # last: done
    return document, predictions, seconds


def _summary(
    baseline: Baseline,
    config: RunConfig,
    data: PreparedData,
    folder: Path,
    per_run: dict[str, dict[str, Any]],
    parts: list[tuple[dict[str, str], str]],
    ensemble: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A baseline's metrics.json content over its runs (the one run's when there is one);
    with several, the summary (with the ``ensemble`` block, when there is one) and the
    combined predictions are written into ``folder``."""
    if len(per_run) == 1:
        return next(iter(per_run.values()))
    summary = aggregate(config, per_run)
    metrics = {"schema": summary["schema"], "name": summary["name"], "model": baseline.name}
    # without the CNN's epoch selection (`select`), which a baseline does not have
    metrics.update({k: v for k, v in summary.items() if k not in (*metrics, "select")})
    metrics["folds"] = data.n_folds
    if ensemble is not None:
        metrics["ensemble"] = ensemble
    atomic_write_text(folder / "metrics.json", to_json(metrics))
    atomic_write_text(folder / "predictions.csv", combine_predictions(parts))
    return metrics


def _context(
    config: RunConfig,
    data: PreparedData,
    heads: Sequence[TaskHead],
    progress: Progress,
    evaluate: tuple[str, ...],
) -> BaselineContext:
    cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else None
    # Under roi.mode auto a baseline cuts the drawn RoIs (roi.train_mode): the localiser's
    # boxes depend on a model, and the radiomics features need the drawn mask anyway.
    roi = config.data.roi.for_training()
    return BaselineContext(data, list(heads), roi, cache_dir, progress, evaluate)


def _checked_probabilities(
    baseline: Baseline, output: BaselineOutput, context: BaselineContext
) -> dict[str, dict[str, np.ndarray]]:
    """The probabilities a baseline returned, checked against the contract: every split to
    evaluate that has images, every task, one finite value in [0, 1] per image."""
    where = f"baseline {baseline.name!r}"
    checked: dict[str, dict[str, np.ndarray]] = {}
    for split in context.evaluate:
        n = len(context.data.indices(split))
        if n == 0:
            continue
        given = output.probabilities.get(split)
        if given is None:
            raise PluginError(f"{where} returned no probabilities for the {split} split")
        checked[split] = {}
        for head in context.heads:
            if head.name not in given:
                raise PluginError(f"{where} returned no {split} probabilities for task {head.name}")
            values = np.asarray(given[head.name], dtype=np.float64)
            shape = (n,) if head.kind == "binary" else (n, len(head.classes))
            if values.shape != shape:
                raise PluginError(
                    f"{where}: {split} probabilities of task {head.name} have shape "
                    f"{values.shape}, expected {shape} (one per image of the split)"
                )
            if (
                not np.all(np.isfinite(values))
                or values.min(initial=0) < 0
                or values.max(initial=0) > 1
            ):
                raise PluginError(
                    f"{where}: {split} probabilities of task {head.name} are not all in [0, 1]"
                )
            checked[split][head.name] = values
    return checked


def _check_files(baseline: Baseline, output: BaselineOutput, step: str) -> None:
    if not isinstance(output, BaselineOutput):
        raise PluginError(
            f"baseline {baseline.name!r}: {step} returned {type(output).__name__}, "
            "not a BaselineOutput"
        )
    for name in output.files:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts or name in CORE_FILES:
            raise PluginError(
                f"baseline {baseline.name!r}: {step} returned a file named {name!r}; files are "
                f"relative names inside its folder, other than {', '.join(CORE_FILES)}"
            )


def _write(path: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        atomic_write_bytes(path, content)
    else:
        atomic_write_text(path, content)


def _warn(progress: Progress, name: str, message: str) -> None:
    progress.console.print(f"[yellow]{shown(name)} warning:[/] {shown(message)}")
