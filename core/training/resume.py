"""What goes into a fit's saved training state and back out of it, for ``mtl resume``.

:mod:`mtlkit.training.state` reads and writes the file; this module captures a running fit
into a :class:`TrainingState` and restores one into freshly built objects, so that the
resumed fit continues exactly where the saved one stood.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mtlkit.config.schema import RunConfig
from mtlkit.errors import UsageError
from mtlkit.results import EpochLog
from mtlkit.training.fit import FitObjects, FitRecord
from mtlkit.training.state import TrainingState, capture_rng, restore_rng


def capture_state(
    epoch: int, objects: FitObjects, record: FitRecord, fingerprint: str
) -> TrainingState:
    """The complete state of a fit after ``epoch`` epochs, the global generators included."""
    average = objects.average
    return TrainingState(
        epoch=epoch,
        model=objects.model.state_dict(),
        weighting=objects.weighting.state_dict(),
        constraints=objects.constraints.state_dict(),
        optimizer=objects.optimizer.state_dict(),
        scheduler=objects.scheduler.state_dict(),
        scaler=objects.scaler.state_dict(),
        average=average.state_dict() if average is not None else {},
        loader_generator=objects.generator.get_state(),
        rng=capture_rng(),
        best=record.best.state_dict(),
        history=[log.as_dict() for log in record.history],
        totals={"seconds": record.seconds, "images": record.images},
        config_fingerprint=fingerprint,
    )


def restore_state(state: TrainingState, objects: FitObjects, record: FitRecord) -> int:
    """Load ``state`` into a fit's fresh objects and record; returns the epochs done."""
    objects.model.load_state_dict(state.model)
    objects.weighting.load_state_dict(state.weighting)
    objects.constraints.load_state_dict(state.constraints)
    objects.optimizer.load_state_dict(state.optimizer)
    objects.scheduler.load_state_dict(state.scheduler)
    if state.scaler:
        objects.scaler.load_state_dict(state.scaler)
    if objects.average is not None:
        objects.average.load_state_dict(state.average)
    objects.generator.set_state(state.loader_generator)
    restore_rng(state.rng)
    record.history = [EpochLog(**log) for log in state.history]
    record.best.load_state_dict(state.best)
    record.seconds, record.images = state.totals["seconds"], int(state.totals["images"])
    return state.epoch


def fingerprint(config: RunConfig, seed: int, fold: object) -> str:
    """What a training state belongs to: the config, the seed and the fold."""
    text = config.model_dump_json() + f"|seed={seed}|fold={fold}"
    return hashlib.sha256(text.encode()).hexdigest()


def check_resumable(state: TrainingState, path: Path, fingerprint: str, epochs: int) -> None:
    """Refuse a state saved by another config, seed or fold, or beyond ``epochs``."""
    if state.config_fingerprint != fingerprint:
        raise UsageError(
            f"{path} was saved by a run with another config, seed or fold; "
            "it cannot be resumed with this one"
        )
    if state.epoch > epochs:
        raise UsageError(f"{path} is at epoch {state.epoch}, beyond training.epochs ({epochs})")
