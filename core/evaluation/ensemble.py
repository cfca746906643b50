"""The ensemble of a fold's repeated runs: each image's probabilities averaged over the
models of the fold's seeds, and that average scored exactly as one model's predictions
(:func:`~mtlkit.evaluation.metrics.score_split`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mtlkit.components.interfaces import Constraint, MetricFn, TaskHead
from mtlkit.components.resolve import Components
from mtlkit.config.schema import EvaluationConfig
from mtlkit.data.prepared import PreparedData
from mtlkit.errors import UsageError
from mtlkit.evaluation.documents import (
    combine_predictions,
    ensemble_document,
    predictions_csv,
    read_predictions_csv,
)
from mtlkit.evaluation.metrics import score_split
from mtlkit.evaluation.split_statistics import add_youden
from mtlkit.results import EvalResult, Predictions
from mtlkit.text import csv_cell

EvaluatedSet = tuple[PreparedData, np.ndarray]
"""The data of one evaluated set and its images, in the order the members predicted them."""


def evaluated_sets(
    data: PreparedData,
    splits: Sequence[str],
    externals: Mapping[str, PreparedData] | None = None,
) -> dict[str, EvaluatedSet]:
    """Each set a model of ``data``'s fold is evaluated on, with its images in the order
    of its predictions: ``splits`` of ``data``, then the external sets (every image)."""
    sets: dict[str, EvaluatedSet] = {s: (data, data.indices(s)) for s in splits}
    for name, external in (externals or {}).items():
        sets[name] = (external, np.arange(len(external.samples)))
    return sets


def mean_predictions(members: Sequence[Predictions]) -> Predictions:
    """The members' predictions of one split averaged per image and task: the mean
    probability of a binary task, the mean of each class's probability of a multiclass
    one. Ids and targets are the first member's; members that predicted other images, or
    the same in another order, are a ValueError."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0]
    for other in members[1:]:
        if other.split != first.split or other.image_ids != first.image_ids:
            raise ValueError(f"the ensemble's members predicted different images of {first.split}")
    probabilities = {
        task: np.mean(
            np.stack([np.asarray(m.probabilities[task], dtype=np.float64) for m in members]),
            axis=0,
        )
        for task in first.probabilities
    }
    return Predictions(
        first.split,
        list(first.image_ids),
        list(first.patient_ids),
        {task: np.asarray(t, dtype=np.float64) for task, t in first.targets.items()},
        probabilities,
    )


def score_ensemble(
    members: Sequence[Mapping[str, Predictions]],
    sets: Mapping[str, EvaluatedSet],
    heads: list[TaskHead],
    metrics: Mapping[str, MetricFn],
    constraints: list[Constraint],
    relations: Sequence[tuple[str, str]],
    evaluation: EvaluationConfig,
) -> dict[str, EvalResult]:
    """Every set the members predicted (in the first member's order) scored from the mean
    of their probabilities, with ``metrics``, the consistency of ``relations`` and the
    threshold, statistics and Youden option of ``evaluation`` (the ensemble's own Youden
    threshold on ``val``). Targets come from the data, as for a model; ``constraints``
    report their violations (fresh instances: an ensemble trains none). A set ``sets``
    lacks, or whose images differ from the members', is a ValueError."""
    evals = {}
    for name in members[0]:
        if name not in sets:
            raise ValueError(f"the ensemble's members predicted {name}, which is not evaluated")
        data, indices = sets[name]
        mean = mean_predictions([m[name] for m in members])
        ids = [data.samples[i].image_id for i in indices]
        if len(ids) != len(mean.image_ids) or any(
            theirs not in (ours, csv_cell(ours))
            for ours, theirs in zip(ids, mean.image_ids, strict=True)
        ):
            raise ValueError(f"the ensemble's members predicted other images of {name}")
        evals[name] = score_split(
            data,
            indices,
            name,
            heads,
            mean.probabilities,
            metrics,
            constraints,
            evaluation.threshold,
            relations=relations,
            margin=evaluation.consistency_margin,
            statistics=evaluation.statistics,
        )
    if evaluation.statistics.youden:
        add_youden(evals, heads, metrics)
    return evals


def ensemble_results(
    members: Sequence[tuple[int, str, str]],
    sets_of: Callable[[int], Mapping[str, EvaluatedSet]],
    seeds: list[int],
    components: Components,
    evaluation: EvaluationConfig,
) -> tuple[dict[str, Any], str]:
    """The ensemble of every fold's seeds: ``members`` holds each run's ``(fold, where,
    predictions.csv content)`` (``where`` names its file in messages) and ``sets_of(fold)``
    the sets of a fold (:data:`EvaluatedSet`). Returns metrics.json's ``ensemble`` block
    (:func:`~mtlkit.evaluation.documents.ensemble_document`) and the content of
    ensemble_predictions.csv (a ``fold`` column with several folds). Members that do not
    fit the data are a UsageError naming their file."""
    constraints = components.build_constraints()  # their violations only: none is trained
    folds = sorted({fold for fold, _, _ in members})
    per_fold: dict[int, dict[str, EvalResult]] = {}
    parts: list[tuple[dict[str, str], str]] = []
    for fold in folds:
        mine = [(where, text) for f, where, text in members if f == fold]
        read = [read_predictions_csv(text, components.heads, where) for where, text in mine]
        try:
            evals = score_ensemble(
                read,
                sets_of(fold),
                components.heads,
                components.metrics,
                constraints,
                components.consistency,
                evaluation,
            )
        except ValueError as exc:
            raise UsageError(
                f"{', '.join(where for where, _ in mine)}: {exc}; move the damaged run's "
                "folder away to train it again"
            ) from None
        per_fold[fold + 1] = evals
        columns = {"fold": str(fold + 1)} if len(folds) > 1 else {}
        parts.append(
            (columns, predictions_csv([e.predictions for e in evals.values()], components.heads))
        )
    return ensemble_document(seeds, per_fold), combine_predictions(parts)
