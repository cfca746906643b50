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
from mtlkit.components.usage import missing_plugins
from mtlkit.config.loading import dump_config, expand_shorthand, read_yaml, validate_config
from mtlkit.config.problems import validation_problems
from mtlkit.config.schema import ExternalSetConfig, device_problem, inference_problem
from mtlkit.engine import Engine
from mtlkit.errors import ConfigError, PluginError, UsageError, list_problems
from mtlkit.evaluation.documents import evaluation_document, predictions_csv
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
    """A test-set file: ``name``, ``source``, optionally ``roi`` and ``adapt_bn``; validated."""
    raw = read_yaml(path)
    if isinstance(raw, dict) and "source" in raw:
        wrapper = {"data": {"source": raw["source"]}}
        expand_shorthand(wrapper)
        raw = {**raw, "source": wrapper["data"]["source"]}
    try:
        return ExternalSetConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc), str(path)) from None


def check_options(device: str, inference: str | None) -> None:
    """A UsageError naming the option (``--device``, ``--inference``) whose value is not
    one, before anything is read."""
    for option, problem in (
        ("--device", device_problem(device)),
        ("--inference", inference_problem(inference)),
    ):
        if problem:
            raise UsageError(f"{option}: {problem}")


def trained_engine(
    checkpoint: Path,
    *,
    device: str = "auto",
    host: PluginHost | None = None,
    progress: Progress | None = None,
    load: bool = True,
    inference: str | None = None,
) -> Engine:
    """An engine built from the config a checkpoint was trained with, holding its weights
    (with ``load``), for scoring or explaining a trained model without its run;
    ``inference`` replaces its ``evaluation.inference`` (``--inference``)."""
    checkpoint = Path(checkpoint)
    meta = read_metadata(checkpoint)
    raw = meta["config"]
    raw["training"]["device"] = device
    if inference is not None:
        raw.setdefault("evaluation", {})["inference"] = inference
    backbone = raw.get("backbone")
    if isinstance(backbone, dict) and "pretrained" in backbone:
        # The checkpoint holds the weights: no download, and no weights file that may
        # have been moved since training.
        backbone["pretrained"] = False
    # Inference never trains, so the optimizer and scheduler the model was trained with do
    # not matter here: their plugins need not be installed, and checkpoints written before
    # they were plugins hold options for every optimizer (momentum beside adam).
    for unused in ("optimizer", "scheduler"):
        raw["training"].pop(unused, None)
    raw["baselines"] = []  # the checkpoint is the CNN's: its run's baselines are not needed
    config = validate_config(raw, f"{checkpoint} (the config it was trained with)")
    host = host if host is not None else PluginHost()
    missing = missing_plugins(meta["plugins"], host)
    if missing:
        raise PluginError(
            list_problems(f"{checkpoint} needs plugins that are not available here:", missing)
        )
    engine = Engine(config, host=host, progress=progress)
    if load:
        engine.load_checkpoint(checkpoint)
    return engine


def evaluate_checkpoint(
    checkpoint: Path,
    data_file: Path,
    *,
    out_dir: Path | None = None,
    device: str = "auto",
    host: PluginHost | None = None,
    progress: Progress | None = None,
    inference: str | None = None,
    adapt_bn: bool | None = None,
) -> EvaluationOutcome:
    """Score ``checkpoint`` on the test set described by ``data_file``; ``inference``
    replaces the checkpoint's ``evaluation.inference``, ``adapt_bn`` (unless None) the
    file's ``adapt_bn`` (whose default is the run's ``evaluation.adapt_bn``)."""
    check_options(device, inference)
    meta = read_metadata(checkpoint)
    external = load_external_set(data_file)
    if adapt_bn is not None:
        external = external.model_copy(update={"adapt_bn": adapt_bn})
    if out_dir is not None:
        check_run_dir(out_dir)
    engine = trained_engine(
        checkpoint, device=device, host=host, progress=progress, load=False, inference=inference
    )
    config = engine.config
    data = engine.load_external(external, str(data_file))
    engine.load_checkpoint(checkpoint)
    result = engine.evaluate_external(data, engine.adapts_batch_norm(external, data))
    metrics = evaluation_document(config, str(checkpoint), meta["info"], {external.name: result})
    if out_dir is not None:
        with prepare_run_dir(out_dir):
            atomic_write_text(out_dir / "metrics.json", to_json(metrics))
            atomic_write_text(out_dir / "config.yaml", dump_config(config))
            atomic_write_text(
                out_dir / "predictions.csv", predictions_csv([result.predictions], engine.heads)
            )
    summary = [(e, o) for e, o in engine.components.reports if e.name == "summary"]
    if not summary:  # the run did not show a summary; an evaluation always does
        entry = engine.host.reports.get("summary")
        summary = [(entry, entry.options() if entry.options else None)]
    if out_dir is not None and "html" in engine.host.reports:  # report.html beside the files
        entry = engine.host.reports.get("html")
        summary.append((entry, entry.options() if entry.options else None))
    return EvaluationOutcome(metrics, out_dir, summary)
