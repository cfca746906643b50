"""Metrics over a whole split, per task, from probabilities and targets."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mtlkit.components.interfaces import Constraint, MetricFn, TaskHead
from mtlkit.config.schema import StatisticsConfig
from mtlkit.data.prepared import PreparedData
from mtlkit.evaluation.auc import binary_auc
from mtlkit.evaluation.consistency import measure_consistency
from mtlkit.evaluation.split_statistics import add_statistics
from mtlkit.results import EvalResult, Predictions


def class_metric_name(metric: str, class_name: str) -> str:
    """The metrics.json key of one class's value of a per-class metric: ``auc[luminal A]``."""
    return f"{metric}[{class_name}]"


def split_metric_name(key: str) -> tuple[str, str | None]:
    """A task's metrics.json key as ``(metric, class)``; class None for a whole-task value
    (``auc`` -> ``("auc", None)``, ``auc[luminal A]`` -> ``("auc", "luminal A")``)."""
    metric, bracket, rest = key.partition("[")
    if bracket and metric and rest.endswith("]") and len(rest) > 1:
        return metric, rest[:-1]
    return key, None


def metric_values(name: str, value: Any, classes: Sequence[str]) -> dict[str, float]:
    """What a metric returned as metrics.json entries: one number under its name, or one per
    class (a sequence as long as ``classes``) under :func:`class_metric_name` with their mean
    (undefined classes left out) under its name. Raises ``TypeError`` for anything else."""
    if np.ndim(value) == 0:  # a float, a numpy scalar or a 0-d array
        return {name: float(value)}
    values = [float(v) for v in np.asarray(value, dtype=float).reshape(-1)]
    if np.ndim(value) != 1 or len(values) != len(classes):
        raise TypeError(
            f"metric {name!r} returned values of shape {np.shape(value)} for a task with "
            f"{len(classes)} classes: give one number, or one per class"
        )
    defined = [v for v in values if not math.isnan(v)]
    out = {name: float(np.mean(defined)) if defined else math.nan}
    out.update({class_metric_name(name, c): v for c, v in zip(classes, values, strict=True)})
    return out


def task_metrics(
    head: TaskHead,
    targets: np.ndarray,
    probabilities: np.ndarray,
    metrics: Mapping[str, MetricFn],
    threshold: float,
    reference: np.ndarray | None = None,
) -> dict[str, float | int]:
    """Every configured metric for one task over the samples whose target is known.

    Returns ``{"n": ..., "n_positive": ..., metric: value, ...}``; a metric that is
    undefined on this split (e.g. AUC with one class) is NaN, a per-class one adds its
    classes' values (:func:`metric_values`). ``reference`` adds the AUC of a reference
    probability (an oracle, a radiologist) on the same samples.
    """
    known = ~np.isnan(targets)
    y_true = targets[known].astype(np.int64)
    y_prob = probabilities[known]
    row: dict[str, float | int] = {"n": int(known.sum())}
    if head.kind == "binary":
        row["n_positive"] = int(y_true.sum())
    for name, fn in metrics.items():
        if len(y_true):
            row.update(metric_values(name, fn(y_true, y_prob, threshold), head.classes))
        else:
            row[name] = math.nan
    if reference is not None:
        ref = reference[known]
        usable = ~np.isnan(ref)
        row["reference_auc"] = binary_auc(y_true[usable], ref[usable])
    return row


def score_split(
    data: PreparedData,
    indices: np.ndarray,
    split: str,
    heads: list[TaskHead],
    probabilities: Mapping[str, np.ndarray],
    metrics: Mapping[str, MetricFn],
    constraints: list[Constraint],
    threshold: float,
    device: torch.device | None = None,
    relations: Sequence[tuple[str, str]] = (),
    margin: float = 0.1,
    raw_probabilities: Mapping[str, np.ndarray] | None = None,
    statistics: StatisticsConfig | None = None,
) -> EvalResult:
    """The metrics, consistency and predictions of one split from every task's
    probabilities for the images ``indices`` (in that order), as for the CNN: a baseline's
    probabilities are scored by this same function. ``relations`` and ``margin``: see
    :func:`~mtlkit.evaluation.consistency.measure_consistency`; each constraint's own
    :meth:`~mtlkit.Constraint.violations` are added. ``device``: where the constraints
    live (see :func:`constraint_violations`). ``raw_probabilities``: the model's outputs
    before a constraint adjusted them; each binary task then also gets ``raw_auc``.
    ``statistics`` adds the AUC intervals and the calibration of each binary task (see
    :func:`add_statistics`)."""
    targets = {h.name: data.targets[indices, c].numpy() for c, h in enumerate(heads)}
    tasks = {
        head.name: task_metrics(
            head,
            targets[head.name],
            probabilities[head.name],
            metrics,
            threshold,
            data.references[head.name][indices] if head.name in data.references else None,
        )
        for head in heads
    }
    if raw_probabilities is not None:
        for head in heads:
            if head.kind == "binary":
                tasks[head.name]["raw_auc"] = raw_auc(
                    targets[head.name], raw_probabilities[head.name]
                )
    extra = {}
    if statistics is not None:
        groups = [data.groups[i] for i in indices]  # the patient bootstrap's clusters
        extra = add_statistics(tasks, heads, targets, probabilities, groups, statistics)
    predictions = Predictions(
        split=split,
        image_ids=[data.samples[i].image_id for i in indices],
        patient_ids=[data.samples[i].patient_id for i in indices],
        targets=targets,
        probabilities=dict(probabilities),
    )
    return EvalResult(
        split=split,
        n_images=len(indices),
        n_patients=len(set(predictions.patient_ids)),
        tasks=tasks,
        consistency={
            **constraint_violations(constraints, probabilities, threshold, device),
            **measure_consistency(relations, probabilities, threshold, margin),
        },
        predictions=predictions,
        extra=extra,
    )


def raw_auc(targets: np.ndarray, probabilities: np.ndarray) -> float:
    """The AUC of unadjusted probabilities over the samples whose target is known."""
    known = ~np.isnan(targets)
    return binary_auc(targets[known].astype(np.int64), probabilities[known])


def constraint_violations(
    constraints: Iterable[Constraint],
    probabilities: Mapping[str, np.ndarray],
    threshold: float,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Share of samples whose predictions, at ``threshold``, break each constraint relation.

    The probabilities are handed over on ``device``, where the constraints (which may hold
    learned parameters) live.
    """
    tensors = {
        name: torch.as_tensor(p, device=device) for name, p in probabilities.items() if p.ndim == 1
    }
    out: dict[str, float] = {}
    for constraint in constraints:
        out.update(constraint.violations(tensors, threshold))
    return out


def selection_score(metrics: Mapping[str, Mapping[str, float]], select: str) -> float:
    """The validation score ``TASK.METRIC`` or ``mean.METRIC`` (mean over tasks, NaN ignored)."""
    task, metric = select.split(".")
    if task != "mean":
        return float(metrics[task].get(metric, math.nan))
    values = [float(m[metric]) for m in metrics.values() if not math.isnan(m.get(metric, math.nan))]
    return float(np.mean(values)) if values else math.nan
