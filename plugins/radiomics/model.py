"""Per task: Boruta feature selection and a random forest, learnt from training rows only.

Everything here sees the rows it is given and nothing else; the plugin gives it the
training split's rows that have the task's label and features. Seeds are derived from the
run's seed and the task's name, so a run is reproducible and each task gets its own stream.
"""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from mtlkit.plugins.radiomics.options import RadiomicsOptions


@dataclass
class TaskModel:
    """One task's selected features and forest (or a constant when training had one class)."""

    task: str
    n_classes: int
    binary: bool  # probabilities (n,) of the positive class; else (n, classes)
    selected: np.ndarray  # indices of the features the forest uses
    ranks: np.ndarray | None  # Boruta's rank per feature (1 = confirmed), None without Boruta
    decisions: list[str]  # per feature: confirmed, tentative, rejected (or "all")
    forest: RandomForestClassifier | None
    constant: np.ndarray | None  # class probabilities predicted for every image instead
    fallback: bool = False  # Boruta confirmed nothing: the best-ranked features are used


def task_seeds(seed: int, task: str) -> tuple[int, int]:
    """Boruta's and the forest's seeds for one task (independent of the order of tasks)."""
    state = np.random.SeedSequence([seed, zlib.crc32(task.encode())]).generate_state(2)
    return int(state[0]), int(state[1])


def fit_task(
    task: str,
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    options: RadiomicsOptions,
    seed: int,
    binary: bool = True,
) -> TaskModel:
    """Select features with Boruta and fit the forest on these rows (finite features,
    integer labels 0 .. n_classes - 1; ``binary``: a binary head, else a multiclass one)."""
    n_features = features.shape[1]
    present = np.unique(labels)
    if len(present) < 2:  # nothing to learn: predict the one class seen
        constant = np.zeros(n_classes)
        constant[int(present[0])] = 1.0
        return TaskModel(
            task,
            n_classes,
            binary,
            np.arange(n_features),
            None,
            ["all"] * n_features,
            None,
            constant,
        )
    boruta_seed, forest_seed = task_seeds(seed, task)
    ranks, decisions, fallback = None, ["all"] * n_features, False
    selected = np.arange(n_features)
    if options.boruta.enabled:
        ranks, decisions = _boruta(features, labels, options, boruta_seed)
        wanted = {"confirmed", "tentative"} if options.boruta.include_tentative else {"confirmed"}
        selected = np.array([i for i, d in enumerate(decisions) if d in wanted], dtype=np.int64)
        if len(selected) == 0:  # keep the forest usable: the best-ranked features
            selected = np.flatnonzero(ranks == ranks.min())
            fallback = True
    forest_options = options.forest
    forest = RandomForestClassifier(
        n_estimators=forest_options.n_estimators,
        max_depth=forest_options.max_depth,
        min_samples_leaf=forest_options.min_samples_leaf,
        max_features=forest_options.max_features,
        class_weight=forest_options.class_weight,
        n_jobs=options.n_jobs,
        random_state=forest_seed,
    )
    forest.fit(features[:, selected], labels)
    return TaskModel(task, n_classes, binary, selected, ranks, decisions, forest, None, fallback)


def _boruta(
    features: np.ndarray, labels: np.ndarray, options: RadiomicsOptions, seed: int
) -> tuple[np.ndarray, list[str]]:
    # boruta 0.4.3 runs on numpy 2 (it no longer uses np.int/np.float/np.bool, removed in
    # numpy 1.24); checked by tests/test_radiomics.py, so no compatibility shim is needed.
    from boruta import BorutaPy

    settings = options.boruta
    estimator = RandomForestClassifier(
        max_depth=settings.max_depth, class_weight="balanced", n_jobs=options.n_jobs
    )
    selector = BorutaPy(
        estimator,
        n_estimators=settings.n_estimators,
        perc=settings.perc,
        alpha=settings.alpha,
        two_step=settings.two_step,
        max_iter=settings.max_iter,
        random_state=seed,
        verbose=0,
    )
    selector.fit(features, labels)
    confirmed = np.asarray(selector.support_, dtype=bool)
    tentative = np.asarray(selector.support_weak_, dtype=bool)
    decisions = [
        "confirmed" if c else "tentative" if t else "rejected"
        for c, t in zip(confirmed, tentative, strict=True)
    ]
    return np.asarray(selector.ranking_, dtype=np.int64), decisions


def predict_task(model: TaskModel, features: np.ndarray) -> np.ndarray:
    """Probabilities for these rows: (n,) of the positive class for a binary task, (n,
    classes) for a multiclass one (classes absent from training get 0)."""
    if model.forest is None:
        probabilities = np.tile(model.constant, (len(features), 1))
    else:
        probabilities = np.zeros((len(features), model.n_classes))
        if len(features):
            given = model.forest.predict_proba(features[:, model.selected])
            probabilities[:, model.forest.classes_.astype(np.int64)] = given
    return probabilities[:, 1] if model.binary else probabilities


def training_medians(features: np.ndarray) -> np.ndarray:
    """Per-feature medians of training rows, which stand in for an image without features."""
    return np.median(features, axis=0)


def selection_csv(models: list[TaskModel], names: list[str]) -> str:
    """selected_features.csv: per task and feature Boruta's rank and decision, whether the
    forest used it and its importance there (the paper's supplementary table S2)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "feature", "boruta_rank", "decision", "used", "importance"])
    for model in models:
        used = {int(i): k for k, i in enumerate(model.selected)}
        importances = model.forest.feature_importances_ if model.forest is not None else None
        order = sorted(
            range(len(names)),
            key=lambda i: (model.ranks[i] if model.ranks is not None else 0, names[i]),
        )
        for i in order:
            importance = ""
            if importances is not None and i in used:
                importance = f"{importances[used[i]]:.6f}"
            writer.writerow(
                [
                    model.task,
                    names[i],
                    "" if model.ranks is None else int(model.ranks[i]),
                    model.decisions[i] + (" (fallback)" if model.fallback and i in used else ""),
                    int(i in used),
                    importance,
                ]
            )
    return buffer.getvalue()
