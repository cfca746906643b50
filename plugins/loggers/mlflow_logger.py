"""The ``mlflow`` logger: a run as MLflow runs, by default in a local file store inside the
run directory (``<run>/mlruns``), or on any tracking URI.

One MLflow run per ``mtl run``; with several folds or seeds, one child run per fold and seed
nested under it (MLflow's ``mlflow.parentRunId`` tag), so the UI shows the summary and each
fit. A resumed run finds its MLflow runs again by their ``mtlkit.run_key`` (from the run
directory's path), ``mtlkit.role`` and ``mtlkit.fit`` tags and logs only the epochs they lack.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from mtlkit import ExperimentLogger, LoggedFit, LoggedRun, OptionsModel, hookimpl

INSTALL = "pip install 'mtlkit[mlflow]'"
RUN_KEY = "mtlkit.run_key"  # the same for every MLflow run of one run directory
ROLE_TAG = "mtlkit.role"  # "run" (the whole mtl run) or "fit" (one fold and seed)
FIT_TAG = "mtlkit.fit"  # a fit's label: seed_1, fold_2/seed_1
PARENT_TAG = "mlflow.parentRunId"
NAME_TAG = "mlflow.runName"
BATCH = 100  # MLflow takes at most 100 params (1000 metrics) per log_batch call
MAX_PARAM = 6000  # MLflow's limit on a parameter's value
KEY_CHARACTERS = re.compile(r"[^A-Za-z0-9_\-. /]")  # what MLflow refuses in a key


class MlflowOptions(OptionsModel):
    tracking_uri: str | None = Field(
        None,
        min_length=1,
        description="where the runs go (sqlite:///mlflow.db, http://host:5000, file:///dir); "
        "default: a file store in the run directory's mlruns/",
    )
    experiment: str | None = Field(
        None, min_length=1, description="the MLflow experiment; default: the config's name"
    )
    artifacts: bool = Field(
        True, description="upload the run directory's main files (metrics, predictions, card)"
    )


class MlflowLogger(ExperimentLogger):
    """MLflow runs: parameters from the config, metrics per epoch and final, the run's main
    files as artifacts; one child run per fold and seed when there are several."""

    requires = ("mlflow",)
    install = INSTALL

    def __init__(self, options: MlflowOptions):
        self.options = options
        self._client: Any = None
        self._experiment = ""
        self._run: LoggedRun | None = None
        self._key = ""
        self._parent = ""  # the MLflow run of the whole mtl run
        self._current = ""  # the MLflow run of the fit being trained
        self._logged: dict[str, set[int]] = {}  # metric key -> steps the current run holds
        self._uploaded: set[str] = set()  # artifact names the parent run holds

    def start_run(self, run: LoggedRun) -> None:
        from mlflow.tracking import MlflowClient

        uri = self.options.tracking_uri
        if uri is None:
            uri = (run.out_dir / "mlruns").resolve().as_uri()
            # MLflow 3 keeps the file store in maintenance mode behind this opt-in; it is
            # the one store that needs no server and no database.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = MlflowClient(tracking_uri=uri)
        self._experiment = self._experiment_id(self.options.experiment or run.name)
        self._run = run
        self._key = hashlib.sha256(str(run.out_dir.resolve()).encode()).hexdigest()[:16]
        self._parent = self._find("run") if run.resume else ""
        if not self._parent:
            self._parent = self._create({ROLE_TAG: "run", NAME_TAG: run.name})
            self._log_params(self._parent, run.params)

    def start_fit(self, fit: LoggedFit) -> None:
        if not fit.label:  # the run's only fit: the run itself
            self._current = self._parent
        else:
            found = self._find("fit", fit.label) if self._run.resume else ""
            self._current = found or self._create_fit(fit)
        self._logged = self._logged_steps(self._current) if self._run.resume else {}

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [
            Metric(_key(k), float(v), stamp, epoch)
            for k, v in values.items()
            if epoch not in self._logged.get(_key(k), ())
        ]
        for start in range(0, len(metrics), BATCH):
            self._client.log_batch(self._current, metrics=metrics[start : start + BATCH])

    def end_fit(self, final: dict[str, float], files: list[Path]) -> None:
        self._log_final(self._current, final)
        self._log_files(self._current, files)
        if self._current != self._parent:
            self._client.set_terminated(self._current)

    def fail_run(self, error: str, interrupted: bool) -> None:
        if self._client is None:
            return
        status = "KILLED" if interrupted else "FAILED"
        for run_id in dict.fromkeys((self._current, self._parent)):  # the fit's, then the run's
            if run_id:
                self._client.set_tag(run_id, "mtlkit.error", error[:500])
                self._client.set_terminated(run_id, status)

    def end_run(self, final: dict[str, float], files: list[Path]) -> None:
        if self._run.fits != [""]:  # a single fit's final metrics are the run's, logged
            self._log_final(self._parent, final)
        self._log_files(self._parent, [p for p in files if p.name not in self._uploaded])
        self._client.set_terminated(self._parent)

    # --- MLflow ------------------------------------------------------------------------

    def _experiment_id(self, name: str) -> str:
        experiment = self._client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return self._client.create_experiment(name)

    def _find(self, role: str, label: str = "") -> str:
        """The id of this run directory's MLflow run of ``role`` (and fit ``label``), or ``""``."""
        query = f"tags.`{RUN_KEY}` = '{self._key}' and tags.`{ROLE_TAG}` = '{role}'"
        if label:
            query += f" and tags.`{FIT_TAG}` = '{label}'"
        runs = self._client.search_runs([self._experiment], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else ""

    def _create(self, tags: dict[str, str]) -> str:
        tags = {RUN_KEY: self._key, **tags}
        return self._client.create_run(self._experiment, tags=tags).info.run_id

    def _create_fit(self, fit: LoggedFit) -> str:
        tags = {ROLE_TAG: "fit", FIT_TAG: fit.label, PARENT_TAG: self._parent}
        run_id = self._create({**tags, NAME_TAG: f"{self._run.name}/{fit.label}"})
        fit_params = {"seed": str(fit.seed)}
        if fit.fold is not None:
            fit_params["fold"] = str(fit.fold)
        self._log_params(run_id, {**self._run.params, **fit_params})
        return run_id

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        entries = [Param(_key(k), v[:MAX_PARAM]) for k, v in params.items()]
        for start in range(0, len(entries), BATCH):
            self._client.log_batch(run_id, params=entries[start : start + BATCH])

    def _logged_steps(self, run_id: str) -> dict[str, set[int]]:
        """Every metric key of ``run_id`` with the steps it holds (what a resume skips)."""
        keys = self._client.get_run(run_id).data.metrics
        return {key: {m.step for m in self._client.get_metric_history(run_id, key)} for key in keys}

    def _log_final(self, run_id: str, final: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(_key(f"final.{k}"), float(v), stamp, 0) for k, v in final.items()]
        for start in range(0, len(metrics), BATCH):
            self._client.log_batch(run_id, metrics=metrics[start : start + BATCH])

    def _log_files(self, run_id: str, files: list[Path]) -> None:
        if not self.options.artifacts:
            return
        for path in files:
            self._client.log_artifact(run_id, str(path))
            if run_id == self._parent:
                self._uploaded.add(path.name)


def _key(name: str) -> str:
    return KEY_CHARACTERS.sub("_", name)


@hookimpl
def mtl_register_loggers(registry):
    registry.register("mlflow", MlflowLogger, options=MlflowOptions)
