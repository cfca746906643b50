"""The ``mtl`` command line: a full tiny run, config errors, output directories, listings."""

from __future__ import annotations

import csv
import json
import re

import pytest
from conftest import METRICS, TASKS, run_mtl, tiny_raw, write_yaml

from mtlkit import TrainingError, hookimpl, load_config
from mtlkit.cli import Command, main
from mtlkit.components.host import PluginHost
from mtlkit.errors import DataError
from mtlkit.training.checkpoint import read_metadata


def config_file(tmp_path, raw=None, name="config.yaml"):
    return write_yaml(tmp_path / name, raw if raw is not None else tiny_raw())


# --- a full run in a subprocess -------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_run")
    config = config_file(tmp)
    out = tmp / "out"
    done = run_mtl(
        "run",
        str(config),
        "--set",
        "training.epochs=1",
        "--set",
        "name=cli_tiny",
        "--out",
        str(out),
        "--quiet",
        cwd=tmp,
    )
    return done, out


def test_run_exits_0_and_names_the_run_directory(cli_run):
    done, out = cli_run
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert str(out) in done.stdout.replace("\n", "")


def test_run_writes_metrics_json(cli_run):
    _, out = cli_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schema"] == "mtlkit.metrics/1"
    assert metrics["name"] == "cli_tiny" and metrics["epochs"] == 1 and metrics["seed"] == 0
    assert metrics["best_epoch"] == 1
    test = metrics["sets"]["test"]
    assert test["n_images"] > 0 and 0 < test["n_patients"] <= test["n_images"]
    assert set(test["tasks"]) == set(TASKS)
    for task, row in test["tasks"].items():
        assert set(METRICS) | {"n"} <= set(row), task
        assert isinstance(row["n"], int) and 0 < row["n"] <= test["n_images"]
        for name in METRICS:
            assert row[name] is None or 0.0 <= row[name] <= 1.0, (task, name)
    assert "val" in metrics["sets"]


def test_run_writes_predictions_csv(cli_run):
    _, out = cli_run
    with open(out / "predictions.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames
        rows = list(reader)
    expected = ["image_id", "patient_id", "split"]
    for task in TASKS:
        expected += [f"{task}_label", f"{task}_prob"]
    assert columns == expected
    splits = json.loads((out / "splits.json").read_text())
    assert {r["split"] for r in rows} == {"val", "test"}
    for split in ("val", "test"):
        assert [r["image_id"] for r in rows if r["split"] == split] == splits[split]["images"]
    for row in rows:
        for task in TASKS:
            assert 0.0 <= float(row[f"{task}_prob"]) <= 1.0
            assert row[f"{task}_label"] in ("", "0", "1")


def test_run_writes_splits_json(cli_run):
    _, out = cli_run
    splits = json.loads((out / "splits.json").read_text())
    assert splits["version"] == 1
    patients = [set(splits[s]["patients"]) for s in ("train", "val", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    images = [i for s in ("train", "val", "test") for i in splits[s]["images"]]
    assert len(images) == len(set(images)) > 0
    assert len(set().union(*patients)) == 24


def test_run_writes_the_resolved_config(cli_run):
    _, out = cli_run
    config = load_config(out / "config.yaml")
    assert config.training.epochs == 1  # --set was applied
    assert config.name == "cli_tiny"
    assert config.data.source["patients"] == 24
    environment = json.loads((out / "environment.json").read_text())
    assert {"mtlkit", "python", "torch", "timm", "numpy"} <= set(environment)


def test_run_writes_the_best_checkpoint(cli_run):
    _, out = cli_run
    best = out / "checkpoints" / "best.safetensors"
    assert best.is_file()
    meta = read_metadata(best)
    assert meta["info"] == {"epoch": 1, "seed": 0}
    assert meta["config"]["name"] == "cli_tiny"
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1


# --- configuration errors: exit 2, the YAML path, no traceback, nothing written --------------

BAD_CONFIGS = {
    "misspelled head type": (
        lambda raw: raw["heads"].__setitem__(0, {"type": "binaryy", "name": "bm", "label": "bm"}),
        ["heads[0].type", "did you mean 'binary'"],
    ),
    "unknown key": (
        lambda raw: raw["training"].__setitem__("epohcs", 3),
        ["training.epohcs", "unknown key"],
    ),
    "wrong value type": (
        lambda raw: raw["training"].__setitem__("epochs", "abc"),
        ["training.epochs", "integer"],
    ),
}


def bad_config(tmp_path, case):
    raw = tiny_raw()
    BAD_CONFIGS[case][0](raw)
    return config_file(tmp_path, raw)


def unwrapped(text: str) -> str:
    """Console output with rich's soft line breaks removed."""
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_validate_bad_config_exits_2_naming_the_path(tmp_path, capsys, case):
    code = main(["validate", str(bad_config(tmp_path, case))])
    captured = capsys.readouterr()
    assert code == 2
    for words in BAD_CONFIGS[case][1]:
        assert words in unwrapped(captured.err), captured.err
    assert "Traceback" not in captured.err
    assert "valid." not in captured.out


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_run_with_bad_config_exits_2_and_creates_no_out_dir(tmp_path, capsys, case):
    out = tmp_path / "out"
    code = main(["run", str(bad_config(tmp_path, case)), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert BAD_CONFIGS[case][1][0] in unwrapped(captured.err)
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_validate_in_a_subprocess_has_no_traceback(tmp_path):
    done = run_mtl("validate", str(bad_config(tmp_path, "misspelled head type")), cwd=tmp_path)
    assert done.returncode == 2
    assert "heads[0].type" in done.stderr
    assert "did you mean 'binary'" in unwrapped(done.stderr)
    assert "Traceback" not in done.stderr


def test_validate_good_config(tmp_path, capsys):
    assert main(["validate", str(config_file(tmp_path))]) == 0
    out = unwrapped(capsys.readouterr().out)
    assert "valid." in out and "bm, alnm, alnm_ge2, alnm_ge3, alnm_ge4" in out


def test_bad_override_exits_2(tmp_path, capsys):
    code = main(["validate", str(config_file(tmp_path)), "--set", "heads[9].dropout=0.1"])
    assert code == 2
    assert "heads[9]" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_run_refuses_a_non_empty_out_dir(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "sub").mkdir()
    (out / "sub" / "x.bin").write_bytes(b"\x00\x01")
    code = main(["run", str(config_file(tmp_path)), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert "not empty" in unwrapped(captured.err)
    assert "Traceback" not in captured.err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "notes.txt",
        "sub",
        "sub/x.bin",
    ]
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "sub" / "x.bin").read_bytes() == b"\x00\x01"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: mtl" in capsys.readouterr().out


# --- mtl plugins ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugins_listing(tmp_path_factory):
    done = run_mtl("plugins", cwd=tmp_path_factory.mktemp("plugins"))
    assert done.returncode == 0, done.stderr
    return done.stdout


BUILTIN_OWNERS = {
    "mtlkit.heads": ["bm", "alnm", "alnm_burden", "multiclass", "binary"],
    "mtlkit.backbones": ["resnet50", "timm"],
    "mtlkit.constraints": ["hierarchical_hinge", "coherent"],
    "mtlkit.weighting": ["equal", "uncertainty", "dwa"],
    "mtlkit.optimizers": ["adam", "adamw", "sgd", "step", "cosine", "none"],
    "mtlkit.task_losses": ["bce", "cross_entropy"],
    "mtlkit.metrics": ["acc", "se", "sp", "precision", "f1", "auc"],
    "mtlkit.synthetic": ["synthetic", "data synth"],
    "mtlkit.manifest": ["manifest"],
    "mtlkit.busi": ["busi"],
    "mtlkit.reports": ["summary", "markdown"],
    "mtlkit.radiomics": ["radiomics"],
    "mtlkit.model_card": ["model_card"],
    "mtlkit.tensorboard": ["tensorboard"],
    "mtlkit.mlflow": ["mlflow"],
}


@pytest.mark.parametrize(
    "name, plugin", [(name, owner) for owner, names in BUILTIN_OWNERS.items() for name in names]
)
def test_plugins_lists_every_component_with_its_plugin(plugins_listing, name, plugin):
    row = re.compile(rf"^\W*{re.escape(name)}\s*\W\s*{re.escape(plugin)}\s*\W\s*mtlkit\b", re.M)
    assert row.search(plugins_listing), f"no row '{name} | {plugin} | mtlkit'"


def test_plugins_table_titles_are_plurals(plugins_listing):
    titles = re.findall(r"^(\w[\w ]*\w)\s*$", plugins_listing, re.M)
    assert "task losses" in titles
    assert "task losss" not in titles


def test_plugins_lists_in_process_disabled_plugins(monkeypatch, capsys):
    monkeypatch.setenv("MTLKIT_DISABLE_PLUGINS", "mtlkit.reports")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "disabled: mtlkit.reports" in out
    assert not re.search(r"^\W*summary\s*\W\s*mtlkit.reports", out, re.M)


# --- mtl data synth -------------------------------------------------------------------------


def test_data_synth_writes_a_manifest(tmp_path):
    out = tmp_path / "phantoms"
    done = run_mtl(
        "data", "synth", "--out", str(out), "--patients", "5", "--image-size", "32", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    manifest = out / "manifest.csv"
    assert manifest.is_file()
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"patient_id", "bm", "alnm_count"} <= set(rows[0])
    assert len({r["patient_id"] for r in rows}) == 5
    assert "oracle AUC" in unwrapped(done.stdout)


# --- exit codes of the command line ---------------------------------------------------------


class Failing:
    """A plugin whose commands fail in the three ways the CLI distinguishes."""

    name = "failing_commands"

    @hookimpl
    def mtl_register_commands(self, registry):
        def raiser(exc):
            def run(args, ctx):
                raise exc

            return Command(f"raise {type(exc).__name__}", lambda parser: None, run)

        registry.register("boom internal", raiser(RuntimeError("kaput")))
        registry.register("boom training", raiser(TrainingError("loss is nan")))
        registry.register("boom usage", raiser(DataError("bad rows")))


@pytest.fixture
def failing_cli(monkeypatch):
    import mtlkit.cli as cli

    monkeypatch.setattr(cli, "PluginHost", lambda: PluginHost([Failing()]))


@pytest.mark.parametrize(
    "command, code, words",
    [
        ("internal", 1, "internal error: RuntimeError: kaput"),
        ("training", 1, "failed: loss is nan"),
        ("usage", 2, "error: bad rows"),
    ],
)
def test_exit_codes_and_messages(failing_cli, capsys, command, code, words):
    assert main(["boom", command]) == code
    err = unwrapped(capsys.readouterr().err)
    assert words in err
    assert "Traceback" not in err


def test_debug_shows_the_exception(failing_cli):
    with pytest.raises(RuntimeError, match="kaput"):
        main(["--debug", "boom", "internal"])


def test_debug_is_accepted_after_the_subcommand(tmp_path, capsys):
    config = write_yaml(tmp_path / "c.yaml", tiny_raw())
    assert main(["validate", str(config), "--debug"]) == 0


def test_run_outputs_get_the_usual_file_mode(cli_run):
    import os

    _, out = cli_run
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "predictions.csv", "checkpoints/best.safetensors"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
