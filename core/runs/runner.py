"""``mtl run``: train one model per seed, evaluate, write the run directory, run reports.

Everything that can reject the input (config, plugins, data) happens before the run
directory is created, so a rejected run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from rich.console import Console

from mtlkit.components.host import PluginHost
from mtlkit.components.interfaces import LoggedFit
from mtlkit.components.resolve import call_component
from mtlkit.components.usage import components_used
from mtlkit.config.loading import dump_config
from mtlkit.config.schema import RunConfig
from mtlkit.data.inspection import shared_images
from mtlkit.data.prepared import PreparedData
from mtlkit.engine import Engine
from mtlkit.errors import DataError, UsageError, list_problems
from mtlkit.evaluation.comparison import compare_models, comparison_csv, single_run_tests
from mtlkit.evaluation.documents import (
    aggregate,
    combine_predictions,
    history_csv,
    metrics_document,
    predictions_csv,
    timing_document,
)
from mtlkit.evaluation.ensemble import ensemble_results, evaluated_sets
from mtlkit.evaluation.split_statistics import add_youden
from mtlkit.files import (
    ENSEMBLE_PREDICTIONS,
    RunLock,
    atomic_write_text,
    check_run_dir,
    prepare_run_dir,
    to_json,
)
from mtlkit.files_in import MAX_CONFIG_BYTES, InputFileError, read_bytes
from mtlkit.progress import Progress
from mtlkit.readback import finished_run, read_json
from mtlkit.results import RunResult
from mtlkit.runs.baselines import RunSlot, prepare_baselines, run_baselines
from mtlkit.runs.loggers import RunLoggers
from mtlkit.runs.provenance import environment
from mtlkit.text import shown
from mtlkit.training import distributed

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
    cnn: bool = True,
) -> RunResult:
    """Train and evaluate ``config`` once per fold and seed; returns the run result and
    writes ``metrics.json``, ``predictions.csv``, ``history.json`` and ``history.csv``,
    ``timing.json``, ``config.yaml``, ``splits.json``, ``environment.json`` and checkpoints
    into the run directory, mirrored into the configured experiment loggers. Each of
    ``config.baselines`` is trained and evaluated on the same splits, folds and seeds, its
    results in ``<run>/<baseline name>/``.

    ``resume=True`` continues an interrupted run in ``out_dir``: finished folds and seeds are
    kept, an unfinished one continues from its last saved training state. ``cnn=False``
    runs the baselines alone (``mtl radiomics``).

    Under torchrun every rank calls this: the ranks train each model together (DDP) and
    evaluate it together; rank 0 alone writes the run directory, runs the baselines and
    reports and prints, and the other ranks return a result without metrics.
    """
    with distributed.session(config.training):
        if not distributed.is_main():  # the other ranks are silent
            console, progress = (
                Console(quiet=True),
                Progress(enabled=False, console=Console(quiet=True)),
            )
        console = console or Console()
        progress = progress or Progress(enabled=False)
        host = host if host is not None else PluginHost(plugins)
        first = Engine(config, host=host, progress=progress)  # resolves every component
        if not cnn and not first.components.baselines:
            raise UsageError("nothing to run: the CNN is off and the config has no baselines")
        if not cnn and distributed.world_size() > 1:
            raise UsageError("the baselines alone (no CNN) run in one process, not under torchrun")
        # One run directory for all ranks: rank 0's (its timestamp, if none is given).
        out = Path(
            distributed.from_main(
                lambda: str(out_dir if out_dir is not None else default_out_dir(config))
            )
        )
        data, externals, baselines, lock = _start(first, out, resume, progress, cnn)
        with lock:
            return _run_all(
                first, host, progress, console, resume, out, data, externals, baselines, cnn
            )


def _run_all(
    first, host, progress, console, resume, out, data, externals, baselines, cnn
) -> RunResult:
    """Every fold and seed, the summary over them, the baselines and the reports, in the
    locked ``out``, mirrored into the configured experiment loggers."""
    config = first.config
    seeds = config.seeds
    slots = [
        RunSlot(
            fold,
            seed,
            run_label(fold, seed, data.n_folds, seeds),
            run_columns(fold, seed, data.n_folds, seeds),
        )
        for fold in range(data.n_folds)
        for seed in seeds
    ]
    if config.evaluation.ensemble and len(seeds) == 1:
        progress.console.print(
            "[yellow]evaluation.ensemble:[/] one seed per fold, so there is no ensemble to score"
        )
    per_run: dict[str, dict[str, Any]] = {}
    prediction_parts: list[tuple[dict[str, str], str]] = []
    members: list[tuple[int, str, str]] = []  # (fold, file, predictions) for the ensemble
    trained_first = False  # the report plugins get the first model only if it trained here
    main = distributed.is_main()
    loggers = RunLoggers.build(first.components.loggers if cnn and main else [], host, progress)
    loggers.start_run(config, out, [slot.label for slot in slots], resume)
    try:
        for slot in slots if cnn else []:
            run_dir = out / slot.label if slot.label else out
            done = distributed.from_main(partial(finished_run, run_dir)) if resume else None
            if done is None:
                if slot is slots[0]:
                    engine, trained_first = first, True
                else:
                    fold_data = data.for_fold(slot.fold)
                    engine = Engine(
                        config, host=host, seed=slot.seed, progress=progress, data=fold_data
                    )
                fold = slot.fold + 1 if data.n_folds > 1 else None
                with loggers.fit(LoggedFit(slot.label, run_dir, fold, slot.seed)):
                    done = _train_and_evaluate(engine, run_dir, externals, resume)
                loggers.end_fit(run_dir, done[0])
            per_run[slot.label or str(slot.seed)], predictions = done
            prediction_parts.append((slot.columns, predictions))
            members.append((slot.fold, str(run_dir / "predictions.csv"), predictions))

        if not main:  # the summary, baselines and reports are rank 0's
            return RunResult(out_dir=out, metrics={}, task_names=[h.name for h in first.heads])
        if not per_run:
            metrics = {}
        elif len(per_run) == 1:
            metrics = next(iter(per_run.values()))
        else:
            metrics = aggregate(config, per_run)
            metrics["folds"] = data.n_folds
            if config.evaluation.ensemble and len(seeds) > 1:
                metrics["ensemble"], ensemble_predictions = ensemble_results(
                    members,
                    lambda fold: evaluated_sets(data.for_fold(fold), EVALUATED_SPLITS, externals),
                    seeds,
                    first.components,
                    config.evaluation,
                )
                atomic_write_text(out / ENSEMBLE_PREDICTIONS, ensemble_predictions)
            atomic_write_text(out / "metrics.json", to_json(metrics))
            atomic_write_text(out / "predictions.csv", combine_predictions(prediction_parts))

        baseline_metrics = run_baselines(
            baselines,
            slots,
            first.components,
            config,
            data,
            out,
            progress,
            EVALUATED_SPLITS,
            resume,
        )
        comparison = None
        if metrics and baseline_metrics:
            comparison = write_comparison(
                config, out, metrics, baseline_metrics, first.components.metrics
            )
        result = RunResult(
            out_dir=out,
            metrics=metrics,
            task_names=[h.name for h in first.heads],
            baselines=baseline_metrics,
            engine=first if trained_first else None,
            comparison=comparison,
        )
        for index, (entry, options) in enumerate(first.components.reports):
            call_component(entry, options, f"reports[{index}]")(result, console)
        loggers.end_run(out, metrics)
    except BaseException as exc:  # the trackers' runs are closed as failed, not left open
        loggers.fail_run(exc)
        raise
    return result


COMPARISON_SCHEMA = "mtlkit.comparison/1"
CNN = "cnn"


def write_comparison(
    config: RunConfig,
    out: Path,
    metrics: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    metric_fns: dict[str, Any],
) -> dict[str, Any]:
    """comparison.json and comparison.csv (the paper's Tables 2 and 4): every task and metric
    of the CNN and of each baseline on the test split, summarised over runs, each baseline
    with the p-value of its difference from the CNN (over runs, or from the predictions of
    a single run)."""
    documents = {CNN: metrics, **baselines}
    statistics = config.evaluation.statistics
    tests = single_run_tests(
        CNN,
        {CNN: out, **{name: out / name for name in baselines}},
        documents,
        metric_fns,
        config.evaluation.threshold,
        statistics.bootstrap_resamples,
        statistics.seed,
        by_patient=statistics.bootstrap_unit == "patient",
    )
    document = {
        "schema": COMPARISON_SCHEMA,
        "name": config.name,
        "reference": CNN,
        "split": "test",
        "seeds": config.seeds,
        "models": compare_models(CNN, documents, "test", tests),
    }
    atomic_write_text(out / "comparison.json", to_json(document))
    atomic_write_text(out / "comparison.csv", comparison_csv(document["models"], "model"))
    return document


def _start(
    first: Engine, out: Path, resume: bool, progress: Progress, cnn: bool = True
) -> tuple[PreparedData, dict[str, PreparedData], list, RunLock | contextlib.nullcontext]:
    """Everything that can reject the run, then the run directory's shared files; returns
    the training data, the external sets, the prepared baselines and the run directory's
    lock."""
    config = first.config
    main = distributed.is_main()
    # Rank 0 checks the directory; its refusal is raised on every rank.
    if resume:
        distributed.from_main(lambda: check_resumable(out, config))
    else:
        distributed.from_main(lambda: check_run_dir(out))  # before the (long) data loading
    data = first.data  # data errors surface here, before anything is written
    externals = load_externals(first, data)
    if cnn:
        first.build_model()  # and backbone/weights errors too
    for prepared in (data, *externals.values()):
        for warning in prepared.warnings:  # e.g. near-duplicates with different labels
            progress.console.print(f"[yellow]data warning:[/] {shown(warning)}")
    records = environment(data, components_used(config, first.components, first.host))
    # Every rank prepared its data itself (it is deterministic): they must agree.
    distributed.check_same(records["data"]["fingerprint"], "the data's fingerprint")
    if not main:
        return data, externals, [], contextlib.nullcontext()
    baselines = prepare_baselines(first.components, config, data, progress, EVALUATED_SPLITS)
    if resume:
        lock = RunLock(out)
        try:
            check_same_data(out, data, records)
        except BaseException:
            lock.release()
            raise
        for stale in out.rglob(".*.tmp"):  # a write the interruption cut short
            stale.unlink()
    else:
        lock = prepare_run_dir(out)
        atomic_write_text(out / "config.yaml", dump_config(config))
        atomic_write_text(out / "splits.json", to_json(data.split_file()))
        atomic_write_text(out / "environment.json", to_json(records))
    for prepared in (data, *externals.values()):
        failure = prepared.save_cache()  # the run is accepted: only now may it leave entries
        if failure:
            progress.console.print(f"[yellow]data warning:[/] {shown(failure)}")
    return data, externals, baselines, lock


def _train_and_evaluate(
    engine: Engine, run_dir: Path, externals: dict[str, PreparedData], resume: bool
) -> tuple[dict[str, Any], str]:
    """Fit one model (one fold and seed), evaluate it, write its files into ``run_dir``;
    returns its metrics document and predictions.csv content."""
    config, data = engine.config, engine.data
    engine.checkpoint_dir = run_dir / "checkpoints"
    fit = engine.fit(resume=resume)
    evals = {s: engine.evaluate(s) for s in EVALUATED_SPLITS if len(data.indices(s))}
    configured = {e.name: e for e in engine.config.evaluation.external}
    evals.update(
        {
            name: engine.evaluate_external(ext, engine.adapts_batch_norm(configured[name], ext))
            for name, ext in externals.items()
        }
    )
    if config.evaluation.statistics.youden:
        add_youden(evals, engine.heads, engine.components.metrics)
    document = metrics_document(config, engine.seed, fit, evals)
    if data.n_folds > 1:
        document["fold"] = data.fold + 1
    predictions = predictions_csv([e.predictions for e in evals.values()], engine.heads)
    if not distributed.is_main():  # rank 0 writes the files
        return document, predictions
    atomic_write_text(run_dir / "predictions.csv", predictions)
    atomic_write_text(run_dir / "history.json", to_json([h.__dict__ for h in fit.history]))
    atomic_write_text(run_dir / "history.csv", history_csv(fit.history))
    atomic_write_text(run_dir / "timing.json", to_json(timing_document(fit)))
    atomic_write_text(run_dir / "metrics.json", to_json(document))  # written last: done
    if engine.state_path is not None:
        engine.state_path.unlink(missing_ok=True)  # the finished run needs it no more
    return document, predictions


class RecordedData(BaseModel):
    """What resuming reads of environment.json: the data's fingerprint."""

    model_config = ConfigDict(extra="allow")
    data: dict[str, Any]

    @field_validator("data")
    @classmethod
    def _fingerprint(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("fingerprint"), str):
            raise ValueError("no data fingerprint")
        return value


def check_resumable(out: Path, config: RunConfig) -> None:
    """A run directory can be resumed with ``config`` only if it was started with it."""
    recorded = out / "config.yaml"
    try:
        text = read_bytes(recorded, "config", MAX_CONFIG_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        raise UsageError(
            f"{out} is not an mtlkit run directory (no config.yaml) to resume"
        ) from None
    except InputFileError as exc:
        raise UsageError(str(exc)) from None
    RunLock(out).release()  # refused now, not after loading the data, while it still trains
    if text != dump_config(config):
        raise UsageError(
            f"{out} was started with another config; resume it with `mtl resume {out}` "
            "(which reads its config.yaml) or start a new run"
        )


def check_same_data(out: Path, data: PreparedData, records: dict[str, Any]) -> None:
    """Resuming on changed data would mix two experiments: refuse it."""
    try:
        before = read_json(out / "environment.json", "valid environment.json", RecordedData).data
    except FileNotFoundError:
        raise UsageError(f"{out}/environment.json is missing; cannot resume") from None
    before = before["fingerprint"]
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


def run_columns(fold: int, seed: int, n_folds: int, seeds: list[int]) -> dict[str, str]:
    """The leading ``fold``/``seed`` columns of one run's rows in a combined predictions.csv."""
    columns = {"fold": str(fold + 1)} if n_folds > 1 else {}
    if len(seeds) > 1:
        columns["seed"] = str(seed)
    return columns


def default_out_dir(config: RunConfig) -> Path:
    """``output_dir`` with ``{name}`` and ``{timestamp}`` filled in."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(config.output_dir.format(name=config.name, timestamp=stamp))
