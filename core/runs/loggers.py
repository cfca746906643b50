"""The experiment loggers of one run (``loggers:`` in the config): built once per run, told
when the run and each fit start and end, and fed every epoch through the training events.

The run directory stays the record of a run; a logger only mirrors it. A logger that fails
is reported once, by name, and logs nothing more in that run: an unreachable tracker never
costs a training run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mtlkit.components.host import PluginHost, hookimpl
from mtlkit.components.interfaces import ExperimentLogger, LoggedFit, LoggedRun
from mtlkit.components.registry import Entry
from mtlkit.components.resolve import call_component
from mtlkit.config.schema import RunConfig
from mtlkit.evaluation.documents import flat_numbers
from mtlkit.files import ENSEMBLE_PREDICTIONS
from mtlkit.progress import Progress
from mtlkit.text import shown

FIT_ARTIFACTS = ("metrics.json", "predictions.csv", "history.json", "history.csv", "timing.json")
"""A fold and seed's own files, given to ``end_fit`` (those that exist)."""
RUN_ARTIFACTS = (
    "config.yaml",
    "splits.json",
    "environment.json",
    "metrics.json",
    "predictions.csv",
    ENSEMBLE_PREDICTIONS,
    "comparison.json",
    "model_card.md",
    "report.html",
)
"""The run directory's main files, given to ``end_run`` (those that exist, after the
reports, so that the model card and the report are among them)."""


def config_params(config: RunConfig) -> dict[str, str]:
    """The config flattened to text parameters: ``{"training.epochs": "3",
    "heads.0.type": "bm"}`` (list items by index, so every key is a valid MLflow key)."""
    params: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping) and value:
            for name, item in value.items():
                walk(item, f"{key}.{name}" if key else str(name))
        elif isinstance(value, list) and value:
            for index, item in enumerate(value):
                walk(item, f"{key}.{index}")
        else:
            params[key] = "null" if value is None else str(value)

    walk(config.model_dump(mode="json"), "")
    return params


def final_numbers(document: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a metrics.json worth a tracker's summary: the best epoch and every
    number of its sets (``test.tasks.bm.auc``, or ``test.tasks.bm.auc.mean`` over repeated
    runs), lists such as reliability bins left out."""
    head = {k: document[k] for k in ("best_epoch", "best_val_score") if k in document}
    return flat_numbers({**head, **(document.get("sets") or {})})


class RunLoggers:
    """The configured loggers of one run. While a fit runs it is an in-process plugin of the
    run's plugin manager, so the training events ``mtl_fit_start`` and ``mtl_epoch_end``
    reach its loggers."""

    def __init__(
        self, loggers: list[tuple[str, ExperimentLogger]], host: PluginHost, progress: Progress
    ):
        self._loggers = loggers
        self._host = host
        self._progress = progress

    @classmethod
    def build(
        cls, specs: list[tuple[Entry, Any]], host: PluginHost, progress: Progress
    ) -> RunLoggers:
        """A fresh instance of every configured logger (``Components.loggers``)."""
        built = [
            (entry.name, call_component(entry, options, f"loggers[{index}]"))
            for index, (entry, options) in enumerate(specs)
        ]
        return cls(built, host, progress)

    # --- what the runner calls ---------------------------------------------------------

    def start_run(self, config: RunConfig, out: Path, fits: list[str], resume: bool) -> None:
        """Tell every logger the run starts (or resumes) in ``out``."""
        run = LoggedRun(
            name=config.name,
            out_dir=out,
            config=config.model_dump(mode="json"),
            params=config_params(config),
            fits=list(fits),
            resume=resume,
        )
        self._tell("start_run", run)

    @contextmanager
    def fit(self, fit: LoggedFit) -> Iterator[None]:
        """Around one fold and seed's training and evaluation: the loggers see its epochs."""
        self._tell("start_fit", fit)
        if not self._loggers:
            yield
            return
        name = f"mtlkit.run_loggers:{fit.label or 'run'}"
        self._host.pm.register(self, name=name)
        try:
            yield
        finally:
            self._host.pm.unregister(name=name)

    def end_fit(self, run_dir: Path, metrics: dict[str, Any]) -> None:
        """The fit in ``run_dir`` is evaluated and its files written."""
        self._tell("end_fit", final_numbers(metrics), _existing(run_dir, FIT_ARTIFACTS))

    def end_run(self, out: Path, metrics: dict[str, Any]) -> None:
        """The run is finished (its reports written)."""
        self._tell("end_run", final_numbers(metrics), _existing(out, RUN_ARTIFACTS))

    def fail_run(self, error: BaseException) -> None:
        """The run stopped with ``error`` (Ctrl-C included) before its end."""
        interrupted = not isinstance(error, Exception)
        self._tell("fail_run", f"{type(error).__name__}: {error}", interrupted)

    # --- the training events -------------------------------------------------------------

    @hookimpl
    def mtl_fit_start(self, engine: Any) -> None:
        # A resumed fit restored these epochs: replay them, since the last one may have
        # been saved but never logged (the logger logs each epoch once).
        for log in engine.restored_epochs:
            self._epoch(log.epoch, log.as_dict())

    @hookimpl
    def mtl_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self._epoch(epoch, logs)

    def _epoch(self, epoch: int, logs: Mapping[str, Any]) -> None:
        values = {k: v for k, v in flat_numbers(logs).items() if k != "epoch"}
        self._tell("log_epoch", epoch, values)

    def _tell(self, method: str, *args: Any) -> None:
        for name, logger in list(self._loggers):
            try:
                getattr(logger, method)(*args)
            except Exception as exc:  # a tracker's failure must not cost the training run
                self._loggers.remove((name, logger))
                self._progress.console.print(
                    f"[yellow]logger warning:[/] logger {shown(name)} failed in {method} "
                    f"({shown(type(exc).__name__)}: {shown(str(exc))}); it logs nothing more "
                    "in this run, whose own files are complete"
                )


def _existing(folder: Path, names: tuple[str, ...]) -> list[Path]:
    return [folder / name for name in names if (folder / name).is_file()]
