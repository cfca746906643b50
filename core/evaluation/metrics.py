"""Metrics over a whole split, per task, from probabilities and targets."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from mtlkit.components.interfaces import Constraint, MetricFn, TaskHead
from mtlkit.config.schema import StatisticsConfig
from mtlkit.data.prepared import PreparedData
from mtlkit.evaluation.auc import binary_auc
from mtlkit.evaluation.consistency import measure_consistency
from mtlkit.evaluation.split_statistics import add_statistics
from mtlkit.results import EvalResult, Predictions


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
    undefined on this split (e.g. AUC with one class) is NaN. ``reference`` adds the AUC of
    a reference probability (an oracle, a radiologist) on the same samples.
    """
    known = ~np.isnan(targets)
    y_true = targets[known].astype(np.int64)
    y_prob = probabilities[known]
    row: dict[str, float | int] = {"n": int(known.sum())}
    if head.kind == "binary":
        row["n_positive"] = int(y_true.sum())
    for name, fn in metrics.items():
        row[name] = float(fn(y_true, y_prob, threshold)) if len(y_true) else math.nan
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
