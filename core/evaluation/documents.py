"""The content of a run directory's result files: metrics.json (one run, repeated runs,
an external evaluation), predictions.csv, history.csv and timing.json. One builder each,
so every command writes the same schema."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mtlkit.components.interfaces import TaskHead
from mtlkit.config.schema import RunConfig
from mtlkit.errors import UsageError
from mtlkit.evaluation.statistics import summarize
from mtlkit.results import EpochLog, EvalResult, FitResult, Predictions
from mtlkit.text import csv_cell

METRICS_SCHEMA = "mtlkit.metrics/1"


def metrics_document(
    config: RunConfig, seed: int, fit: FitResult, evals: dict[str, EvalResult]
) -> dict[str, Any]:
    """The content of metrics.json for one seed."""
    return {
        **_header(config),
        "seed": seed,
        "select": config.evaluation.select,
        "threshold": config.evaluation.threshold,
        "best_epoch": fit.best_epoch,
        "best_val_score": fit.best_score,
        "epochs": config.training.epochs,
        "sets": {split: result.as_dict() for split, result in evals.items()},
    }


def evaluation_document(
    config: RunConfig, checkpoint: str, trained: dict[str, Any], evals: dict[str, EvalResult]
) -> dict[str, Any]:
    """The content of metrics.json of ``mtl evaluate``: a checkpoint scored on other sets."""
    return {
        **_header(config),
        "checkpoint": checkpoint,
        "trained": trained,
        "threshold": config.evaluation.threshold,
        "sets": {name: result.as_dict() for name, result in evals.items()},
    }


def _header(config: RunConfig) -> dict[str, Any]:
    return {"schema": METRICS_SCHEMA, "name": config.name}


def baseline_metrics_document(
    config: RunConfig, model: str, seed: int, evals: dict[str, EvalResult]
) -> dict[str, Any]:
    """The content of a baseline's metrics.json for one seed: the CNN's schema, with the
    baseline's name as ``model`` and without the CNN's epoch selection."""
    return {
        "schema": METRICS_SCHEMA,
        "name": config.name,
        "model": model,
        "seed": seed,
        "threshold": config.evaluation.threshold,
        "sets": {split: result.as_dict() for split, result in evals.items()},
    }


def aggregate(config: RunConfig, per_run: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Repeated runs (seeds, folds) summarised as the paper reports them: mean, SD and a 95%
    interval.

    ``ci95`` is mean +- t(0.975, n-1) x SD, the convention of Li et al. 2022 (its tables'
    intervals follow it); ``values`` keeps every run's number, in the order of ``runs``.
    Every number of a task is summarised (``brier`` and ``ece`` too, and those at the
    Youden threshold); each run's own AUC intervals and reliability bins stay in ``runs``.
    """
    return {
        **_header(config),
        "seeds": config.seeds,
        "select": config.evaluation.select,
        "threshold": config.evaluation.threshold,
        "sets": summarize_sets(list(per_run.values())),
        "runs": per_run,
    }


def summarize_sets(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``sets`` of several runs' metrics documents summarised (see :func:`aggregate`):
    per set, every task's numbers and every consistency share over the runs, the sets and
    tasks of the first run."""
    first = documents[0]
    sets: dict[str, Any] = {}
    for split, content in first["sets"].items():
        tasks = {}
        for task, metrics in content["tasks"].items():
            tasks[task] = _summaries([d["sets"][split]["tasks"][task] for d in documents])
            tasks[task]["n"] = metrics["n"]
        consistency = {
            relation: summarize([d["sets"][split]["consistency"][relation] for d in documents])
            for relation in content.get("consistency", {})
        }
        sets[split] = {
            # folds differ in size: a list of per-run counts then
            "n_images": _same_or_list([d["sets"][split]["n_images"] for d in documents]),
            "n_patients": _same_or_list([d["sets"][split]["n_patients"] for d in documents]),
            "tasks": tasks,
            "consistency": consistency,
        }
        if "statistics" in content:  # how the runs' intervals were computed: the same for all
            sets[split]["statistics"] = content["statistics"]
        if "batch_norm" in content:  # an external set scored with its own statistics (adapt_bn)
            sets[split]["batch_norm"] = content["batch_norm"]
        if "at_youden" in content:
            sets[split]["at_youden"] = {
                task: _summaries([d["sets"][split]["at_youden"][task] for d in documents])
                for task in content["at_youden"]
            }
    return sets


ENSEMBLE_METHOD = (
    "each image's probability averaged over the seeds' models of its fold (each class's "
    "probability for a multiclass task), as their predictions.csv holds them (after the "
    "constraints' adjustments); scored like one model"
)


def ensemble_document(
    seeds: list[int], per_fold: dict[int, dict[str, EvalResult]]
) -> dict[str, Any]:
    """The ``ensemble`` block of metrics.json from each fold's (1, 2, ...) ensemble scored
    per set: ``seeds`` (its members), ``method`` and ``sets``, a single model's set
    metrics with one fold; with several folds, ``sets`` summarises the folds as
    :func:`aggregate` summarises runs and ``runs`` holds each fold's (``fold_<k>``)."""
    documents = {
        f"fold_{fold}": {"fold": fold, "sets": {s: r.as_dict() for s, r in evals.items()}}
        for fold, evals in per_fold.items()
    }
    block: dict[str, Any] = {"seeds": seeds, "method": ENSEMBLE_METHOD}
    if len(documents) == 1:
        block["sets"] = next(iter(documents.values()))["sets"]
    else:
        block["sets"] = summarize_sets(list(documents.values()))
        block["runs"] = documents
    return block


def _summaries(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every number of the first run's row summarised over the runs' rows; counts and
    intervals (lists) are left out."""
    return {
        name: summarize([row.get(name) for row in rows])
        for name, value in rows[0].items()
        if name not in ("n", "n_positive") and not isinstance(value, list)
    }


def _same_or_list(values: list[int]) -> int | list[int]:
    return values[0] if len(set(values)) == 1 else values


def timing_document(fit: FitResult) -> dict[str, Any]:
    """How long training took: kept apart from metrics.json, which must be reproducible."""
    return {
        "train_seconds": round(fit.train_seconds, 3),
        "train_images_per_second": round(fit.train_images_per_second, 2),
        "resumed_from_epoch": fit.resumed_from,
    }


def flat_numbers(log: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested mapping (one epoch's :meth:`EpochLog.as_dict`, a
    metrics.json) flat, nested keys joined with dots (``val_metrics.bm.auc``), in the
    mapping's own order; anything else (text, lists) left out. History.csv's columns and
    what experiment loggers record."""
    flat: dict[str, float] = {}
    for key, value in log.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_numbers(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def history_csv(history: Iterable[EpochLog]) -> str:
    """history.csv content: one row per epoch, one column per logged number (the columns
    of :func:`flat_numbers`, in the order they first appear), empty where an epoch lacks one
    and ``nan`` where it is undefined; the same numbers as history.json."""
    rows = [flat_numbers(log.as_dict()) for log in history]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in columns])
    for row in rows:
        writer.writerow([_number_text(row[c]) if c in row else "" for c in columns])
    return buffer.getvalue()


def _number_text(value: float) -> str:
    # repr round-trips a float exactly, so the CSV and history.json hold the same numbers.
    return str(value) if isinstance(value, int) else repr(float(value))


def prediction_columns(heads: Iterable[TaskHead]) -> list[str]:
    """Column names of predictions.csv after ``image_id, patient_id, split``."""
    columns = []
    for head in heads:
        columns.append(f"{head.name}_label")
        if head.kind == "binary":
            columns.append(f"{head.name}_prob")
        else:
            columns += [f"{head.name}_prob_{c}" for c in head.classes]
    return columns


def predictions_csv(predictions: Iterable[Predictions], heads: list[TaskHead]) -> str:
    """predictions.csv content: one row per image and split, every task's label and probability."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [csv_cell(c) for c in ("image_id", "patient_id", "split", *prediction_columns(heads))]
    )
    for part in predictions:
        for i, image_id in enumerate(part.image_ids):
            # ids and names are text: never a formula in a spreadsheet (numbers are ours)
            row: list[Any] = [csv_cell(image_id), csv_cell(part.patient_ids[i]), part.split]
            for head in heads:
                target = part.targets[head.name][i]
                row.append("" if math.isnan(target) else csv_cell(_label_text(head, target)))
                prob = part.probabilities[head.name][i]
                row += [f"{p:.6f}" for p in np.atleast_1d(prob)]
            writer.writerow(row)
    return buffer.getvalue()


def _label_text(head: TaskHead, target: float) -> str:
    return str(int(target)) if head.kind == "binary" else head.classes[int(target)]


def read_predictions_csv(text: str, heads: list[TaskHead], where: str) -> dict[str, Predictions]:
    """One run's predictions.csv (as :func:`predictions_csv` wrote it) as one
    :class:`Predictions` per split, in the file's order; ids and patient ids as the file
    holds them (:func:`~mtlkit.text.csv_cell`). Other columns, a label a head cannot have
    or a probability that is no number in [0, 1] are a UsageError naming ``where``."""
    reader = csv.reader(io.StringIO(text))
    columns = ["image_id", "patient_id", "split", *prediction_columns(heads)]
    if next(reader, None) != [csv_cell(c) for c in columns]:
        raise UsageError(f"{where} does not have the columns {', '.join(columns)}")
    parts: dict[str, Predictions] = {}
    for line, row in enumerate(reader, start=2):
        if len(row) != len(columns):
            raise UsageError(f"{where}, line {line}: {len(row)} cells, expected {len(columns)}")
        part = parts.get(row[2])
        if part is None:
            part = parts[row[2]] = Predictions(
                row[2], [], [], {h.name: [] for h in heads}, {h.name: [] for h in heads}
            )
        part.image_ids.append(row[0])
        part.patient_ids.append(row[1])
        cells = iter(row[3:])
        for head in heads:
            part.targets[head.name].append(_label_value(head, next(cells), where, line))
            width = 1 if head.kind == "binary" else len(head.classes)
            values = [_probability(next(cells), where, line) for _ in range(width)]
            part.probabilities[head.name].append(values[0] if head.kind == "binary" else values)
    for part in parts.values():
        part.targets = {k: np.array(v, dtype=np.float64) for k, v in part.targets.items()}
        part.probabilities = {
            k: np.array(v, dtype=np.float64) for k, v in part.probabilities.items()
        }
    return parts


def _label_value(head: TaskHead, text: str, where: str, line: int) -> float:
    if text == "":
        return math.nan
    names = ["0", "1"] if head.kind == "binary" else [csv_cell(c) for c in head.classes]
    if text not in names:
        raise UsageError(
            f"{where}, line {line}: {head.name} label {text[:40]!r} is none of {names}"
        )
    return float(names.index(text))


def _probability(text: str, where: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # NaN too
        raise UsageError(f"{where}, line {line}: {text[:40]!r} is not a probability")
    return value


def combine_predictions(parts: list[tuple[dict[str, str], str]]) -> str:
    """One predictions.csv from every run's, with leading ``fold``/``seed`` columns."""
    lines: list[str] = []
    for extra, text in parts:
        prefix = "".join(f"{v}," for v in extra.values())
        header, *rows = text.splitlines()
        if not lines:
            lines.append("".join(f"{k}," for k in extra) + header)
        lines += [prefix + row for row in rows]
    return "\n".join(lines) + "\n"
