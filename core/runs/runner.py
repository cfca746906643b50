"""``mtl run``: train one model per seed, evaluate, write the run directory, run reports.

Everything that can reject the input (config, plugins, data) happens before the run
directory is created, so a rejected run leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import call_component
from mtlkit.components.usage import components_used
from mtlkit.config.loading import dump_config
from mtlkit.config.schema import RunConfig
from mtlkit.data.inspection import shared_images
from mtlkit.data.prepared import PreparedData
from mtlkit.engine import Engine
from mtlkit.errors import DataError, UsageError, list_problems
from mtlkit.evaluation.documents import (
    aggregate,
    combine_predictions,
    metrics_document,
    predictions_csv,
    timing_document,
)
from mtlkit.files import atomic_write_text, check_run_dir, prepare_run_dir, to_json
from mtlkit.progress import Progress
from mtlkit.results import RunResult
from mtlkit.runs.provenance import environment

EVALUATED_SPLITS = ("val", "test")


def run(
    config: RunConfig,
    *,
    out_dir: str | Path | None = None,
    plugins: Iterable[Any] = (),
    host: PluginHost | None = None,
    progress: Progress | None = None,
    console: Console | None = None,
    resume: bool = False,
) -> RunResult:
    """Train and evaluate ``config`` once per fold and seed; returns the run result and
    writes ``metrics.json``, ``predictions.csv``, ``history.json``, ``timing.json``,
    ``config.yaml``, ``splits.json``, ``environment.json`` and checkpoints into the run
    directory.

    ``resume=True`` continues an interrupted run in ``out_dir``: finished folds and seeds are
    kept, an unfinished one continues from its last saved training state.
    """
    console = console or Console()
    progress = progress or Progress(enabled=False)
    host = host if host is not None else PluginHost(plugins)
    first = Engine(config, host=host, progress=progress)  # resolves every component
    out = Path(out_dir) if out_dir is not None else default_out_dir(config)
    data, externals = _start(first, out, resume, progress)

    seeds = config.seeds
    runs = [(fold, seed) for fold in range(data.n_folds) for seed in seeds]
    per_run: dict[str, dict[str, Any]] = {}
    prediction_parts: list[tuple[dict[str, str], str]] = []
    for fold, seed in runs:
        label = run_label(fold, seed, data.n_folds, seeds)
        run_dir = out / label if label else out
        extra = {"fold": str(fold + 1)} if data.n_folds > 1 else {}
        if len(seeds) > 1:
            extra["seed"] = str(seed)
        done = _finished(run_dir) if resume else None
        if done is None:
            if (fold, seed) == runs[0]:
                engine = first
            else:
                fold_data = data.for_fold(fold)
                engine = Engine(config, host=host, seed=seed, progress=progress, data=fold_data)
            done = _train_and_evaluate(engine, run_dir, externals, resume)
        per_run[label or str(seed)], predictions = done
        prediction_parts.append((extra, predictions))

    if len(runs) == 1:
        metrics = next(iter(per_run.values()))
    else:
        metrics = aggregate(config, per_run)
        metrics["folds"] = data.n_folds
        atomic_write_text(out / "metrics.json", to_json(metrics))
        atomic_write_text(out / "predictions.csv", combine_predictions(prediction_parts))

    result = RunResult(
        out_dir=out, metrics=metrics, task_names=[h.name for h in first.heads], engine=first
    )
    for index, (entry, options) in enumerate(first.components.reports):
        call_component(entry, options, f"reports[{index}]")(result, console)
    return result


def _start(
    first: Engine, out: Path, resume: bool, progress: Progress
) -> tuple[PreparedData, dict[str, PreparedData]]:
    """Everything that can reject the run, then the run directory's shared files; returns
    the training data and the external sets."""
    config = first.config
    if resume:
        check_resumable(out, config)
    else:
        check_run_dir(out)  # before the (possibly long) data loading
    data = first.data  # data errors surface here, before anything is written
    externals = load_externals(first, data)
    first.build_model()  # and backbone/weights errors too
    for prepared in (data, *externals.values()):
        for warning in prepared.warnings:  # e.g. near-duplicates with different labels
            progress.console.print(f"[yellow]data warning:[/] {escape(warning)}")
    records = environment(data, components_used(config, first.components, first.host))
    if resume:
        check_same_data(out, data, records)
        for stale in out.rglob(".*.tmp"):  # a write the interruption cut short
            stale.unlink()
    else:
        prepare_run_dir(out)
        atomic_write_text(out / "config.yaml", dump_config(config))
        atomic_write_text(out / "splits.json", to_json(data.split_file()))
        atomic_write_text(out / "environment.json", to_json(records))
    return data, externals


def _finished(run_dir: Path) -> tuple[dict[str, Any], str] | None:
    """The metrics document and predictions of a run that finished before an interruption
    (its metrics.json is written last), or None."""
    if not (run_dir / "metrics.json").is_file():
        return None
    document = json.loads((run_dir / "metrics.json").read_text())
    return document, (run_dir / "predictions.csv").read_text()


def _train_and_evaluate(
    engine: Engine, run_dir: Path, externals: dict[str, PreparedData], resume: bool
) -> tuple[dict[str, Any], str]:
    """Fit one model (one fold and seed), evaluate it, write its files into ``run_dir``;
    returns its metrics document and predictions.csv content."""
    config, data = engine.config, engine.data
    engine.checkpoint_dir = run_dir / "checkpoints"
    fit = engine.fit(resume=resume)
    evals = {s: engine.evaluate(s) for s in EVALUATED_SPLITS if len(data.indices(s))}
    evals.update({name: engine.evaluate_external(ext) for name, ext in externals.items()})
    document = metrics_document(config, engine.seed, fit, evals)
    if data.n_folds > 1:
        document["fold"] = data.fold + 1
    predictions = predictions_csv([e.predictions for e in evals.values()], engine.heads)
    atomic_write_text(run_dir / "predictions.csv", predictions)
    atomic_write_text(run_dir / "history.json", to_json([h.__dict__ for h in fit.history]))
    atomic_write_text(run_dir / "timing.json", to_json(timing_document(fit)))
    atomic_write_text(run_dir / "metrics.json", to_json(document))  # written last: done
    if engine.state_path is not None:
        engine.state_path.unlink(missing_ok=True)  # the finished run needs it no more
    return document, predictions


def check_resumable(out: Path, config: RunConfig) -> None:
    """A run directory can be resumed with ``config`` only if it was started with it."""
    recorded = out / "config.yaml"
    if not recorded.is_file():
        raise UsageError(f"{out} is not an mtlkit run directory (no config.yaml) to resume")
    if recorded.read_text(encoding="utf-8") != dump_config(config):
        raise UsageError(
            f"{out} was started with another config; resume it with `mtl resume {out}` "
            "(which reads its config.yaml) or start a new run"
        )


def check_same_data(out: Path, data: PreparedData, records: dict[str, Any]) -> None:
    """Resuming on changed data would mix two experiments: refuse it."""
    try:
        before = json.loads((out / "environment.json").read_text())["data"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{out}/environment.json is missing or damaged; cannot resume") from None
    if before != records["data"]["fingerprint"]:
        raise DataError(
            f"the data changed since {out} was started (fingerprint {before[:12]}... vs "
            f"{records['data']['fingerprint'][:12]}...); start a new run"
        )


def load_externals(engine: Engine, data: PreparedData) -> dict[str, PreparedData]:
    """Every ``evaluation.external`` set, checked before anything is written; an external
    image identical to one of the training data is an error (its score would flatter)."""
    externals = {}
    for index, external in enumerate(engine.config.evaluation.external):
        prepared = engine.load_external(external, f"evaluation.external[{index}]")
        shared = shared_images(data, prepared)
        if shared:
            raise DataError(
                list_problems(
                    f"external set {external.name} shares {len(shared)} image(s) with the "
                    "training data:",
                    shared,
                )
            )
        externals[external.name] = prepared
    return externals


def run_label(fold: int, seed: int, n_folds: int, seeds: list[int]) -> str:
    """The sub-folder of one training run: ``fold_2/seed_1``, ``seed_1``, ``fold_2`` or ``""``."""
    parts = []
    if n_folds > 1:
        parts.append(f"fold_{fold + 1}")
    if len(seeds) > 1:
        parts.append(f"seed_{seed}")
    return "/".join(parts)


def default_out_dir(config: RunConfig) -> Path:
    """``output_dir`` with ``{name}`` and ``{timestamp}`` filled in."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(config.output_dir.format(name=config.name, timestamp=stamp))
