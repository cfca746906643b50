"""Experiment logging: history.csv beside history.json, and the tensorboard and mlflow
loggers, read back through TensorBoard's event reader and MLflow's client."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, tiny_raw, write_yaml
from rich.console import Console
from test_resume import KILLER

from mtlkit import ConfigError, Engine, ExperimentLogger, Progress, hookimpl, load_config, run
from mtlkit.cli import main
from mtlkit.runs.loggers import config_params

pytest.importorskip("torch.utils.tensorboard")
pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)


def logged_raw(**extra):
    raw = tiny_raw(name="logged", seed=[0, 1], loggers=["tensorboard", "mlflow"], **extra)
    raw["reports"] = ["model_card"]
    return raw


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("loggers") / "run"
    run(load_config(logged_raw()), out_dir=out)
    return out


def history(folder: Path) -> list[dict]:
    return json.loads((folder / "history.json").read_text())


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6)


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the TensorBoard event files in ``folder``."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def client(out: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())


def mlflow_runs(out: Path, experiment: str = "logged"):
    """The parent run and the child runs by fit label of the run directory ``out``."""
    mlflow = client(out)
    found = mlflow.search_runs([mlflow.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in found if r.data.tags["mtlkit.role"] == "run"]
    children = {r.data.tags["mtlkit.fit"]: r for r in found if r.data.tags["mtlkit.role"] == "fit"}
    assert len(parents) == 1 and len(found) == len(children) + 1
    return mlflow, parents[0], children


def test_history_csv_holds_history_json_row_by_row(two_seeds):
    for seed in ("seed_0", "seed_1"):
        epochs = history(two_seeds / seed)
        rows = list(csv.DictReader(io.StringIO((two_seeds / seed / "history.csv").read_text())))
        assert len(rows) == len(epochs) == 2
        columns = list(rows[0])
        assert columns[:3] == ["epoch", "lr", "train_loss"]  # EpochLog's order, stable
        assert "val_metrics.bm.auc" in columns and "task_losses.alnm" in columns
        for row, epoch in zip(rows, epochs, strict=True):
            assert int(row["epoch"]) == epoch["epoch"]
            assert float(row["train_loss"]) == epoch["train_loss"]  # exactly: repr round-trips
            assert same(float(row["val_metrics.bm.auc"]), epoch["val_metrics"]["bm"]["auc"])


def test_tensorboard_holds_every_epoch_of_every_seed_and_the_summary(two_seeds):
    root = two_seeds / "tensorboard"
    for seed in ("seed_0", "seed_1"):
        series = scalars(root / seed)
        epochs = history(two_seeds / seed)
        assert [step for step, _ in series["train_loss"]] == [1, 2]
        for (step, value), epoch in zip(series["val_metrics/bm/auc"], epochs, strict=True):
            assert step == epoch["epoch"] and same(value, epoch["val_metrics"]["bm"]["auc"])
        metrics = json.loads((two_seeds / seed / "metrics.json").read_text())
        ((_, auc),) = series["final/test/tasks/bm/auc"]
        assert same(auc, metrics["sets"]["test"]["tasks"]["bm"]["auc"])
    summary = scalars(root)
    metrics = json.loads((two_seeds / "metrics.json").read_text())
    ((_, mean),) = summary["final/test/tasks/bm/auc/mean"]
    assert same(mean, metrics["sets"]["test"]["tasks"]["bm"]["auc"]["mean"])
    events = EventAccumulator(str(root))
    events.Reload()
    (text,) = events.Tensors("config/text_summary")  # the config, as text
    assert b"model: resnet10t" in text.tensor_proto.string_val[0]


def test_mlflow_holds_one_parent_run_and_one_child_per_seed(two_seeds):
    mlflow, parent, children = mlflow_runs(two_seeds)
    params = parent.data.params
    assert params["training.epochs"] == "2" and params["heads.0.type"] == "bm"
    assert params["seed.1"] == "1" and params["backbone.model"] == "resnet10t"
    metrics = json.loads((two_seeds / "metrics.json").read_text())
    final = parent.data.metrics["final.test.tasks.bm.auc.mean"]
    assert same(final, metrics["sets"]["test"]["tasks"]["bm"]["auc"]["mean"])
    parent_files = {f.path for f in mlflow.list_artifacts(parent.info.run_id)}
    assert {"metrics.json", "config.yaml", "splits.json", "model_card.md"} <= parent_files
    assert parent.info.status == "FINISHED"

    assert sorted(children) == ["seed_0", "seed_1"]
    for seed, child in children.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["seed"] == seed[len("seed_") :]
        epochs = history(two_seeds / seed)
        logged = mlflow.get_metric_history(child.info.run_id, "train_loss")
        assert sorted((m.step, m.value) for m in logged) == [
            (e["epoch"], pytest.approx(e["train_loss"])) for e in epochs
        ]
        files = {f.path for f in mlflow.list_artifacts(child.info.run_id)}
        assert {"metrics.json", "predictions.csv", "history.csv", "history.json"} <= files
        assert child.info.status == "FINISHED"


def test_a_killed_and_resumed_run_logs_each_epoch_once(tmp_path):
    raw = logged_raw()
    raw["training"]["epochs"] = 3
    out = tmp_path / "killed"
    # Two training steps per epoch: step 9 is seed 1's second epoch, after its first was
    # logged and its state saved.
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, json.dumps(raw), str(out), "step", "9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert main(["resume", str(out), "--quiet"]) == 0

    for seed in ("seed_0", "seed_1"):
        epochs = history(out / seed)
        assert [e["epoch"] for e in epochs] == [1, 2, 3]
        rows = list(csv.DictReader(io.StringIO((out / seed / "history.csv").read_text())))
        assert [float(r["train_loss"]) for r in rows] == [e["train_loss"] for e in epochs]
        series = scalars(out / "tensorboard" / seed)["train_loss"]
        assert [step for step, _ in series] == [1, 2, 3]
        assert [v for _, v in series] == pytest.approx([e["train_loss"] for e in epochs])
    mlflow, parent, children = mlflow_runs(out)  # found again, not made twice
    assert sorted(children) == ["seed_0", "seed_1"]
    for seed, child in children.items():
        steps = [m.step for m in mlflow.get_metric_history(child.info.run_id, "train_loss")]
        assert sorted(steps) == [1, 2, 3], seed
    assert parent.info.status == "FINISHED"


def test_a_single_fit_is_one_mlflow_run_with_options(tmp_path):
    raw = tiny_raw(loggers=[{"type": "mlflow", "experiment": "mine"}, "tensorboard"])
    out = tmp_path / "one"
    run(load_config(raw), out_dir=out)
    mlflow, parent, children = mlflow_runs(out, "mine")
    assert not children
    steps = [m.step for m in mlflow.get_metric_history(parent.info.run_id, "train_loss")]
    assert steps == [1, 2]
    assert "final.test.tasks.bm.auc" in parent.data.metrics
    assert [step for step, _ in scalars(out / "tensorboard")["train_loss"]] == [1, 2]


def test_a_missing_extra_is_a_config_error_with_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now fails
    raw = tiny_raw(loggers=["tensorboard", "mlflow"])
    with pytest.raises(ConfigError) as info:
        run(load_config(raw), out_dir=tmp_path / "never")
    ((path, message),) = info.value.problems
    assert path == "loggers[1].type" and "pip install 'mtlkit[mlflow]'" in message
    assert not (tmp_path / "never").exists()
    config = write_yaml(tmp_path / "config.yaml", raw)
    assert main(["validate", str(config)]) == 2
    assert "mtlkit[mlflow]" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(
    "loggers, path, words",
    [
        (["tensorbord"], "loggers[0].type", "did you mean 'tensorboard'"),
        ([{"type": "mlflow", "colour": "red"}], "loggers[0].colour", "unknown key"),
        (["mlflow", {"type": "mlflow"}], "loggers[1].type", "listed twice"),
        ([{"type": "tensorboard", "log_dir": "../out"}], "loggers[0].log_dir", "'..'"),
        ([{"type": "tensorboard", "log_dir": "checkpoints"}], "loggers[0].log_dir", "mtlkit"),
    ],
)
def test_bad_logger_entries_are_config_errors_with_their_path(loggers, path, words):
    with pytest.raises(ConfigError) as info:
        Engine(load_config(tiny_raw(loggers=loggers)))
    assert any(p == path and words in m for p, m in info.value.problems), info.value.problems


class Broken(ExperimentLogger):
    """Fails on the second epoch, as an unreachable tracker would."""

    calls: list[str] = []

    def log_epoch(self, epoch, values):
        Broken.calls.append(f"epoch {epoch}")
        if epoch == 2:
            raise OSError("tracker unreachable")

    def end_run(self, final, files):
        Broken.calls.append("end_run")


class BrokenPlugin:
    name = "broken_logger"

    @hookimpl
    def mtl_register_loggers(self, registry):
        registry.register("broken", Broken)


def test_a_failing_logger_is_reported_and_the_run_completes(tmp_path, capsys):
    console = Console(file=io.StringIO(), width=200)
    raw = tiny_raw(loggers=["broken"])
    raw["reports"] = []
    progress = Progress(enabled=False, console=console)
    result = run(
        load_config(raw), out_dir=tmp_path / "run", plugins=[BrokenPlugin()], progress=progress
    )
    assert (result.out_dir / "metrics.json").is_file()
    assert Broken.calls == ["epoch 1", "epoch 2"]  # nothing after its failure
    printed = " ".join(console.file.getvalue().split())
    assert "logger broken failed in log_epoch (OSError: tracker unreachable)" in printed


def test_config_params_flatten_every_key_to_text():
    params = config_params(load_config(tiny_raw(seed=[3, 4])))
    assert params["seed.0"] == "3" and params["training.epochs"] == "2"
    assert params["heads.2.min_nodes"] == "2" and params["data.split.file"] == "null"
    assert all(isinstance(v, str) for v in params.values())


def test_a_resumed_fits_event_file_sorts_after_the_killed_ones(tmp_path):
    # TensorBoard reads a folder's event files in name order, and a name starts with its
    # creation second: a resume within the killed run's second must still come after it.
    import time

    from mtlkit.plugins.loggers.tensorboard_logger import TensorBoardLogger

    now = int(time.time())
    killed = tmp_path / f"events.out.tfevents.{now}.vm.99999.0"
    killed.write_bytes(b"")
    writer = TensorBoardLogger._open(tmp_path, purge_step=1)
    writer.close()
    names = sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))
    assert names[0] == killed.name and len(names) == 2


def test_a_run_that_fails_closes_its_tracker_runs_as_failed(tmp_path, monkeypatch):
    import mtlkit.runs.runner as runner

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner, "_train_and_evaluate", broken)
    out = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(load_config(logged_raw()), out_dir=out)
    mlflow, parent, children = mlflow_runs(out)
    assert parent.info.status == "FAILED"
    assert "disk on fire" in parent.data.tags["mtlkit.error"]
    assert [child.info.status for child in children.values()] == ["FAILED"]
