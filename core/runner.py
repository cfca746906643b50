"""``mtl run``: train one model per seed, evaluate, write the run directory, run reports.

Everything that can reject the input (config, plugins, data) happens before the run
directory is created, so a rejected run leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from .config import RunConfig, dump_config
from .engine import Engine
from .outputs import (
    METRICS_SCHEMA,
    atomic_write_text,
    check_run_dir,
    predictions_csv,
    prepare_run_dir,
    to_json,
)
from .pluginhost import PluginHost
from .progress import Progress
from .results import EvalResult, FitResult, RunResult

EVALUATED_SPLITS = ("val", "test")


def run(
    config: RunConfig,
    *,
    out_dir: str | Path | None = None,
    plugins: Iterable[Any] = (),
    host: PluginHost | None = None,
    progress: Progress | None = None,
    console: Console | None = None,
) -> RunResult:
    """Train and evaluate ``config`` once per seed; returns the run result and writes
    ``metrics.json``, ``predictions.csv``, ``history.json``, ``config.yaml``, ``splits.json``
    and checkpoints into the run directory."""
    console = console or Console()
    progress = progress or Progress(enabled=False)
    host = host if host is not None else PluginHost(plugins)
    first = Engine(config, host=host, progress=progress)  # resolves every component
    out = Path(out_dir) if out_dir is not None else default_out_dir(config)
    check_run_dir(out)  # before the (possibly long) data loading
    data = first.data  # data errors surface here, before anything is written
    first.build_model()  # and backbone/weights errors too
    prepare_run_dir(out)
    atomic_write_text(out / "config.yaml", dump_config(config))
    atomic_write_text(out / "splits.json", to_json(data.split_file()))
    atomic_write_text(out / "environment.json", to_json(environment()))

    seeds = config.seeds
    per_seed: dict[int, dict[str, Any]] = {}
    all_predictions = []
    for seed in seeds:
        seed_dir = out if len(seeds) == 1 else out / f"seed_{seed}"
        engine = (
            first
            if seed == seeds[0]
            else Engine(config, host=host, seed=seed, progress=progress, data=data)
        )
        engine.checkpoint_dir = seed_dir / "checkpoints"
        fit = engine.fit()
        evals = {s: engine.evaluate(s) for s in EVALUATED_SPLITS if len(data.indices(s))}
        document = metrics_document(config, seed, fit, evals)
        per_seed[seed] = document
        predictions = [e.predictions for e in evals.values()]
        all_predictions.append((seed, predictions))
        atomic_write_text(seed_dir / "metrics.json", to_json(document))
        atomic_write_text(seed_dir / "predictions.csv", predictions_csv(predictions, first.heads))
        atomic_write_text(seed_dir / "history.json", to_json([h.__dict__ for h in fit.history]))

    if len(seeds) == 1:
        metrics = per_seed[seeds[0]]
    else:
        metrics = aggregate(config, per_seed)
        atomic_write_text(out / "metrics.json", to_json(metrics))
        parts = [predictions_csv(p, first.heads, {"seed": str(s)}) for s, p in all_predictions]
        combined = parts[0] + "".join(p.split("\n", 1)[1] for p in parts[1:])
        atomic_write_text(out / "predictions.csv", combined)

    result = RunResult(out_dir=out, metrics=metrics, task_names=[h.name for h in first.heads])
    for entry, options in first.components.reports:
        report = entry.obj(options) if options is not None else entry.obj()
        report(result, console)
    return result


def default_out_dir(config: RunConfig) -> Path:
    """``output_dir`` with ``{name}`` and ``{timestamp}`` filled in."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(config.output_dir.format(name=config.name, timestamp=stamp))


def metrics_document(
    config: RunConfig, seed: int, fit: FitResult, evals: dict[str, EvalResult]
) -> dict[str, Any]:
    """The content of metrics.json for one seed."""
    return {
        "schema": METRICS_SCHEMA,
        "name": config.name,
        "seed": seed,
        "select": config.evaluation.select,
        "threshold": config.evaluation.threshold,
        "best_epoch": fit.best_epoch,
        "best_val_score": fit.best_score,
        "epochs": config.training.epochs,
        "train_seconds": round(fit.train_seconds, 3),
        "train_images_per_second": round(fit.train_images_per_second, 2),
        "sets": {split: result.as_dict() for split, result in evals.items()},
    }


def aggregate(config: RunConfig, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Repeated runs summarised as the paper reports them: mean, SD and a 95% interval.

    ``ci95`` is mean +- t(0.975, n-1) x SD, the convention of Li et al. 2022 (its tables'
    intervals follow it); ``values`` keeps every seed's number.
    """
    seeds = list(per_seed)
    first = per_seed[seeds[0]]
    sets: dict[str, Any] = {}
    for split, content in first["sets"].items():
        tasks = {}
        for task, metrics in content["tasks"].items():
            tasks[task] = {
                name: summarize([per_seed[s]["sets"][split]["tasks"][task][name] for s in seeds])
                for name in metrics
                if name not in ("n", "n_positive")
            }
            tasks[task]["n"] = metrics["n"]
        consistency = {
            relation: summarize(
                [per_seed[s]["sets"][split]["consistency"][relation] for s in seeds]
            )
            for relation in content.get("consistency", {})
        }
        sets[split] = {
            "n_images": content["n_images"],
            "n_patients": content["n_patients"],
            "tasks": tasks,
            "consistency": consistency,
        }
    return {
        "schema": METRICS_SCHEMA,
        "name": config.name,
        "seeds": seeds,
        "select": config.evaluation.select,
        "threshold": config.evaluation.threshold,
        "sets": sets,
        "runs": {str(s): per_seed[s] for s in seeds},
    }


def summarize(values: list[float]) -> dict[str, Any]:
    """Mean, SD (n-1), the paper's 95% interval, the 95% CI of the mean and the values.

    NaNs are left out. ``ci95`` is mean +- t x SD as in the paper's tables; ``ci95_mean``
    is the usual confidence interval of the mean, mean +- t x SD / sqrt(n).
    """
    from scipy.stats import t

    finite = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(finite)
    mean = float(np.mean(finite)) if finite else math.nan
    sd = float(np.std(finite, ddof=1)) if n > 1 else math.nan
    half = float(t.ppf(0.975, n - 1)) * sd if n > 1 else math.nan
    return {
        "mean": mean,
        "sd": sd,
        "ci95": [mean - half, mean + half],
        "ci95_mean": [mean - half / math.sqrt(n), mean + half / math.sqrt(n)]
        if n
        else [math.nan] * 2,
        "values": values,
    }


def environment() -> dict[str, Any]:
    """Versions of what produced a run, recorded beside its results."""
    import timm
    import torch

    from . import __version__

    return {
        "mtlkit": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
