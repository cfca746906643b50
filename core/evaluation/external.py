"""External validation of a trained model: ``mtl evaluate --checkpoint CKPT --data DATA``.

The checkpoint carries the config it was trained with, so the test set is read with the
same preprocessing (RoI margin, input size) and scored with the same heads and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mtlkit.components.host import PluginHost
from mtlkit.config.loading import expand_shorthand, read_yaml, validate_config
from mtlkit.config.problems import validation_problems
from mtlkit.config.schema import ExternalSetConfig
from mtlkit.engine import Engine
from mtlkit.errors import ConfigError
from mtlkit.evaluation.documents import METRICS_SCHEMA, predictions_csv
from mtlkit.files import atomic_write_text, check_run_dir, prepare_run_dir, to_json
from mtlkit.progress import Progress
from mtlkit.training.checkpoint import read_metadata


@dataclass
class EvaluationOutcome:
    """The metrics document (as ``mtl run`` writes it, one set) and where it was written."""

    metrics: dict[str, Any]
    out_dir: Path | None
    reports: list = field(default_factory=list)


def load_external_set(path: Path) -> ExternalSetConfig:
    """A test-set file: ``name``, ``source`` and optionally ``roi``, validated with YAML paths."""
    raw = read_yaml(path)
    if isinstance(raw, dict) and "source" in raw:
        wrapper = {"data": {"source": raw["source"]}}
        expand_shorthand(wrapper)
        raw = {**raw, "source": wrapper["data"]["source"]}
    try:
        return ExternalSetConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc), str(path)) from None


def evaluate_checkpoint(
    checkpoint: Path,
    data_file: Path,
    *,
    out_dir: Path | None = None,
    device: str = "auto",
    host: PluginHost | None = None,
    progress: Progress | None = None,
) -> EvaluationOutcome:
    """Score ``checkpoint`` on the test set described by ``data_file``."""
    meta = read_metadata(checkpoint)
    raw = meta["config"]
    raw["training"]["device"] = device
    raw["baselines"] = []  # the checkpoint is the CNN's: its run's baselines are not needed
    config = validate_config(raw, f"{checkpoint} (the config it was trained with)")
    external = load_external_set(data_file)
    if out_dir is not None:
        check_run_dir(out_dir)
    engine = Engine(config, host=host, progress=progress)
    data = engine.load_external(external, str(data_file))
    engine.load_checkpoint(checkpoint)
    result = engine.evaluate_external(data)
    metrics = {
        "schema": METRICS_SCHEMA,
        "name": config.name,
        "checkpoint": str(checkpoint),
        "trained": meta["info"],
        "threshold": config.evaluation.threshold,
        "sets": {external.name: result.as_dict()},
    }
    if out_dir is not None:
        prepare_run_dir(out_dir)
        atomic_write_text(out_dir / "metrics.json", to_json(metrics))
        atomic_write_text(
            out_dir / "predictions.csv", predictions_csv([result.predictions], engine.heads)
        )
    summary = [(e, o) for e, o in engine.components.reports if e.name == "summary"]
    if not summary:  # the run did not show a summary; an evaluation always does
        entry = engine.host.reports.get("summary")
        summary = [(entry, entry.options() if entry.options else None)]
    return EvaluationOutcome(metrics, out_dir, summary)
