"""Typed results returned by the engine API."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class EpochLog:
    """One epoch: mean training loss per part, validation metrics and the selection score;
    ``task_weights``: each task loss's weight in the epoch (empty when the weighting does
    not say)."""

    epoch: int
    lr: float
    train_loss: float
    task_losses: dict[str, float]
    constraint_loss: float
    val_score: float
    val_metrics: dict[str, dict[str, float]]
    seconds: float
    train_images_per_second: float
    task_weights: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The log as plain JSON values (numpy numbers become floats)."""
        return json.loads(json.dumps(self.__dict__, default=float))


@dataclass
class FitResult:
    """What ``Engine.fit`` returns. The model holds the best epoch's weights afterwards."""

    best_epoch: int
    best_score: float
    history: list[EpochLog]
    train_seconds: float
    train_images_per_second: float
    resumed_from: int = 0  # epochs restored from a saved training state


@dataclass
class Predictions:
    """Per-image outputs on one split: ids, targets (NaN = unknown) and probabilities."""

    split: str
    image_ids: list[str]
    patient_ids: list[str]
    targets: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray]  # (N,) binary, (N, classes) multiclass


@dataclass
class RoiOutputs:
    """What the model predicts for a batch of RoIs (``Engine.predict_rois``): each task's
    probabilities ((N,) binary, (N, classes) multiclass) after the constraints that adjust
    outputs, the raw ones before them (None when no constraint adjusts), and each
    segmentation task's per-pixel lesion probabilities (N, S, S)."""

    probabilities: dict[str, np.ndarray]
    raw: dict[str, np.ndarray] | None
    masks: dict[str, np.ndarray]


@dataclass
class EvalResult:
    """Metrics of one split: ``tasks[task][metric]``, plus constraint violation shares.

    ``extra`` holds further blocks written beside them in metrics.json (``statistics``,
    ``calibration``, ``at_youden``: see :mod:`mtlkit.evaluation.split_statistics`;
    ``roi_whole_image``: with ``data.roi.mode: auto``, the images whose RoI is the whole
    image because the localiser found no lesion)."""

    split: str
    n_images: int
    n_patients: int
    tasks: dict[str, dict[str, float]]
    consistency: dict[str, float]
    predictions: Predictions
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "n_patients": self.n_patients,
            "tasks": self.tasks,
            "consistency": self.consistency,
            **self.extra,
        }


@dataclass
class RunResult:
    """A finished run as reports see it: its directory, the content of its metrics.json
    (empty when only baselines ran) and of each baseline's ``<name>/metrics.json``.

    ``engine`` is the engine of the run's first fold and seed (its data and model), for
    reports that need the images or the network, such as a Grad-CAM gallery; it is None
    when a report is made again from the files of a finished run (``mtl report``) or for
    ``mtl evaluate``."""

    out_dir: Path
    metrics: dict[str, Any]
    task_names: list[str] = field(default_factory=list)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine: Any = field(default=None, repr=False, compare=False)
    comparison: dict[str, Any] | None = None
    """The content of comparison.json (the CNN against its baselines), when there are any."""
    ablation: dict[str, Any] | None = None
    """The content of ablation.json when the reports are made again for the reference
    variant of a finished ablation (``mtl ablate``); None otherwise."""
