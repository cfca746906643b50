"""The ``tensorboard`` logger: a run's epochs and final metrics as TensorBoard scalars,
one event folder per fold and seed, the config as text."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, TypeAdapter, ValidationError, field_validator

from mtlkit import ExperimentLogger, LoggedFit, LoggedRun, OptionsModel, OutputName, hookimpl

INSTALL = "pip install 'mtlkit[tensorboard]'"


class TensorBoardOptions(OptionsModel):
    log_dir: str = Field(
        "tensorboard",
        min_length=1,
        description="folder of the event files: relative to the run directory, or absolute",
    )

    @field_validator("log_dir")
    @classmethod
    def _inside_the_run_or_absolute(cls, value: str) -> str:
        if Path(value).is_absolute():
            return value
        try:  # a relative folder is a plain name inside the run directory, as every output
            return TypeAdapter(OutputName).validate_python(value)
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


class TensorBoardLogger(ExperimentLogger):
    """TensorBoard event files: ``<log_dir>/<fold_k/seed_s>`` per fold and seed (the log
    folder itself for a single fit); view with ``tensorboard --logdir RUN_DIR/tensorboard``."""

    requires = ("torch.utils.tensorboard",)
    install = INSTALL

    def __init__(self, options: TensorBoardOptions):
        self.options = options
        self._root: Path | None = None
        self._resume = False
        self._single = False  # one fit, logged in the log folder itself
        self._fit: LoggedFit | None = None
        self._writer: Any = None
        self._last_epoch = 0

    def start_run(self, run: LoggedRun) -> None:
        root = Path(self.options.log_dir)
        self._root = root if root.is_absolute() else run.out_dir / root
        self._resume = run.resume
        self._single = run.fits == [""]
        if run.resume:  # the config and parameters are there from the first start
            return
        writer = self._open(self._root)
        writer.add_text("config", _code_block(run.config), 0)
        rows = "\n".join(f"| {k} | {v} |" for k, v in run.params.items())
        writer.add_text("params", f"| parameter | value |\n|---|---|\n{rows}", 0)
        writer.close()

    def start_fit(self, fit: LoggedFit) -> None:
        self._fit = fit
        self._writer = None  # opened by the first epoch, which decides what a resume purges
        self._last_epoch = 0

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        if self._writer is None:
            # A resumed fit starts again at ``epoch`` (its restored epochs replayed first):
            # purge_step makes TensorBoard drop what an earlier file holds from that step on,
            # so each epoch appears once.
            self._writer = self._open(self._fit_dir(), epoch if self._resume else None)
        for key, value in values.items():
            self._writer.add_scalar(_tag(key), value, epoch)
        self._writer.flush()  # on disk every epoch: a killed run keeps its curves
        self._last_epoch = epoch

    def end_fit(self, final: dict[str, float], files: list[Path]) -> None:
        if self._writer is None:  # a fit resumed after its last epoch: nothing was logged
            self._writer = self._open(self._fit_dir())
        self._final(self._writer, final, self._last_epoch)
        self._writer.close()
        self._writer = None

    def fail_run(self, error: str, interrupted: bool) -> None:
        if self._writer is not None:  # what was logged stays on disk; a resume purges on
            self._writer.close()
            self._writer = None

    def end_run(self, final: dict[str, float], files: list[Path]) -> None:
        if self._single:
            return  # its fit's final metrics are the run's, logged already
        writer = self._open(self._root)
        self._final(writer, final, self._last_epoch)
        writer.close()

    def _fit_dir(self) -> Path:
        return self._root / self._fit.label if self._fit.label else self._root

    @staticmethod
    def _final(writer: Any, final: dict[str, float], step: int) -> None:
        for key, value in final.items():
            writer.add_scalar(f"final/{_tag(key)}", value, step)
        writer.flush()

    @staticmethod
    def _open(folder: Path, purge_step: int | None = None) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        if purge_step is not None:
            _after_existing_files(folder)
        return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def _after_existing_files(folder: Path) -> None:
    """Wait, if need be, until the clock's second is later than every event file's in
    ``folder``: TensorBoard reads a folder's files in name order, and a name starts with
    its creation second, so a resumed fit's file opened in the same second as the killed
    one's could sort before it (then its purge would be read first and undo nothing)."""
    seconds = []
    for path in folder.glob("events.out.tfevents.*"):
        stamp = path.name.split(".")[3]
        if stamp.isdigit():
            seconds.append(int(stamp))
    if seconds:
        wait = max(seconds) + 1 - time.time()
        if wait > 0:
            time.sleep(min(wait, 1.0))


def _tag(key: str) -> str:
    # Slashes group TensorBoard's charts: val_metrics/bm/auc sits with the other metrics.
    return key.replace(".", "/")


def _code_block(config: dict[str, Any]) -> str:
    return "```\n" + yaml.safe_dump(config, sort_keys=False) + "```"


@hookimpl
def mtl_register_loggers(registry):
    registry.register("tensorboard", TensorBoardLogger, options=TensorBoardOptions)
