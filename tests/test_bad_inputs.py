"""A corpus of bad inputs: each gives exit code 2 and a message naming the problem and its
place (YAML path, CSV row or file), with no traceback and no run directory left behind.

Two tables, one row per case: bad configurations (one mutation of the tiny config, or raw
YAML text) and bad data (one thing broken in a copy of a small synthetic manifest set).
Every case runs ``mtl run`` in-process; data cases also run ``mtl data check``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import tiny_raw, write_yaml
from PIL import Image

from mtlkit.cli import main
from mtlkit.config.loading import parse_path
from mtlkit.plugins.synthetic.phantoms import (
    PhantomSettings,
    generate_phantoms,
    write_phantom_set,
)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """A small synthetic manifest set (12 patients, 1-2 images of 32 px each); read-only."""
    out = tmp_path_factory.mktemp("bad-inputs") / "set"
    settings = PhantomSettings(patients=12, images_min=1, images_max=2, image_size=32)
    write_phantom_set(generate_phantoms(settings, seed=0), out)
    return out


def flat(text: str) -> str:
    """Output with whitespace normalised: rich wraps long lines at the terminal width."""
    return " ".join(text.split())


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """No line wrapping by rich, so that long file names stay whole in the output."""
    monkeypatch.setenv("COLUMNS", "2000")


def run_refused(config: Path, tmp_path: Path, capsys) -> str:
    """``mtl run CONFIG``: asserts the refusal (exit 2, no traceback, nothing written) and
    returns the normalised error output."""
    out = tmp_path / "run"
    code = main(["run", str(config), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    text = flat(captured.err)
    assert "Traceback" not in captured.out + captured.err
    assert code == 2, captured.out + captured.err
    assert_no_control(captured.out + captured.err)
    assert not out.exists()
    assert not (tmp_path / "runs").exists()
    return text


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def assert_no_control(output: str) -> None:
    """No terminal control character reaches the terminal, whatever the input held (rich
    adds none: the tests' consoles are not terminals)."""
    found = CONTROL.findall(output)
    assert not found, f"control characters {found!r} printed raw in: {output!r}"


def assert_names(text: str, expected: tuple[str, ...]) -> None:
    missing = [e for e in expected if flat(e) not in text]
    assert not missing, f"{missing} not in: {text}"


def case(name: str, make: Callable, *expected: str, xfail: str | None = None):
    """One row of a table: how to make the bad input, and what its message must contain."""
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(make, expected, id=name, marks=marks)


# --- bad configurations ----------------------------------------------------------------------

Make = Callable[[Path, Path], Path]
"""How a case writes its config: ``make(tmp_path, phantoms) -> config path``."""


def config(mutate: Callable[[dict[str, Any]], Any], manifest: bool = False) -> Make:
    """A case made by one in-place change of the tiny config (on the phantom manifest for
    problems that only the data reveals)."""

    def make(tmp_path: Path, phantoms: Path) -> Path:
        raw = tiny_raw()
        raw["output_dir"] = str(tmp_path / "runs" / "{name}")
        if manifest:
            raw["data"]["source"] = {"type": "manifest", "path": str(phantoms / "manifest.csv")}
        mutate(raw)
        return write_yaml(tmp_path / "config.yaml", raw)

    return make


def config_with_file(mutate: Callable[[dict[str, Any], Path], Any]) -> Make:
    """A case whose change names a file or folder it makes (``mutate(raw, tmp_path)``)."""

    def make(tmp_path: Path, phantoms: Path) -> Path:
        return config(lambda raw: mutate(raw, tmp_path))(tmp_path, phantoms)

    return make


def _note(tmp_path: Path, name: str, content: bytes = b"just some notes\n") -> str:
    (tmp_path / name).write_bytes(content)
    return str(tmp_path / name)


def setting(path: str, value: Any) -> Make:
    """A case that sets one YAML path (``heads[1].name``) of the tiny config."""

    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = parse_path(path)
        node: Any = raw
        for part in parents:
            node = node[part]
        node[last] = value

    return config(mutate)


def text_file(content: str | bytes) -> Make:
    """A case whose config file holds exactly ``content``."""

    def make(tmp_path: Path, phantoms: Path) -> Path:
        path = tmp_path / "config.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return make


def tiny_text(edit: Callable[[str], str]) -> Make:
    """A case whose config file is the tiny config's YAML text, edited (one epoch)."""

    def make(tmp_path: Path, phantoms: Path) -> Path:
        raw = tiny_raw()
        raw["output_dir"] = str(tmp_path / "runs" / "{name}")
        raw["training"]["epochs"] = 1
        text = yaml.safe_dump(raw, sort_keys=False)
        return text_file(edit(text))(tmp_path, phantoms)

    return make


def _negative_weight(raw):
    raw["weighting"] = {"type": "equal", "weights": {"bm": -1.0}}
    raw["training"]["epochs"] = 1  # today the run is accepted: keep it short


def missing_file(tmp_path: Path, phantoms: Path) -> Path:
    return tmp_path / "no-such-config.yaml"


def _cycle(raw):
    raw["constraints"][0]["pairs"] = [["bm", "alnm"], ["alnm", "alnm_ge2"], ["alnm_ge2", "bm"]]


def _split_file(raw):
    raw["data"]["split"] = {"file": "/no/such/dir/splits.json"}


def _binary_threshold_on_bm(raw):
    raw["heads"][0] = {"type": "binary", "name": "bm", "label": "bm", "threshold": 1}


CONFIG_CASES = [
    # wrong types
    case("epochs-text", setting("training.epochs", "abc"), "training.epochs", "integer", "'abc'"),
    case("batch-size-list", setting("training.batch_size", [16]), "training.batch_size", "integer"),
    case("data-a-number", setting("data", 5), "data", "5"),
    case("heads-not-a-list", setting("heads", "bm"), "heads", "list"),
    case("lr-text", setting("training.optimizer.lr", "fast"), "training.optimizer.lr", "number"),
    case("seed-text", setting("seed", "abc"), "seed", "integer"),
    case("head-option-text", setting("heads[2].min_nodes", "two"), "heads[2].min_nodes", "integer"),
    # unknown keys
    case(
        "top-level-trainig",
        config(lambda r: r.update(trainig={"epochs": 1})),
        "trainig",
        "unknown key",
    ),
    case("training-epohcs", setting("training.epohcs", 3), "training.epohcs", "unknown key"),
    case(
        "head-option-unknown", setting("heads[2].dropuot", 0.2), "heads[2].dropuot", "unknown key"
    ),
    case(
        "source-option-unknown",
        setting("data.source.patiens", 9),
        "data.source.patiens",
        "unknown key",
    ),
    case(
        "constraint-option-unknown",
        setting("constraints[0].margn", 0.1),
        "constraints[0].margn",
        "unknown key",
    ),
    # unknown plugin names
    case("unknown-head", setting("heads[0]", "bmm"), "heads[0].type", "did you mean 'bm'?"),
    case(
        "unknown-backbone",
        setting("backbone.type", "timmm"),
        "backbone.type",
        "did you mean 'timm'?",
    ),
    case(
        "unknown-constraint",
        setting("constraints[0].type", "hierarchical"),
        "constraints[0].type",
        "hierarchical_hinge",
    ),
    case(
        "unknown-metric",
        setting("evaluation.metrics", ["acc", "aucc"]),
        "evaluation.metrics[1]",
        "did you mean 'auc'?",
    ),
    case(
        "unknown-data-source",
        setting("data.source", "synthetc"),
        "data.source.type",
        "did you mean 'synthetic'?",
    ),
    case(
        "unknown-report",
        setting("reports", ["summary", "sumary"]),
        "reports[1].type",
        "did you mean 'summary'?",
    ),
    case(
        "unknown-weighting",
        setting("weighting", "equall"),
        "weighting.type",
        "did you mean 'equal'?",
    ),
    case(
        "unknown-timm-model",
        setting("backbone.model", "resnet10tt"),
        "backbone.model",
        "resnet10tt",
    ),
    # values out of range
    case(
        "negative-epochs",
        setting("training.epochs", -2),
        "training.epochs",
        "greater than or equal to 1",
    ),
    case(
        "zero-epochs",
        setting("training.epochs", 0),
        "training.epochs",
        "greater than or equal to 1",
    ),
    case("image-size-too-small", setting("data.image_size", 8), "data.image_size", "16"),
    case(
        "threshold-above-1",
        setting("evaluation.threshold", 1.5),
        "evaluation.threshold",
        "less than 1",
    ),
    case("ema-of-1", setting("training.ema", 1.0), "training.ema", "less than 1"),
    case("negative-ema", setting("training.ema", -0.9), "training.ema", "greater than or equal"),
    case("unknown-device", setting("training.device", "gpu"), "training.device", "cuda"),
    case("roi-mode", setting("data.roi.mode", "polygon"), "data.roi.mode", "'box'"),
    case(
        "augmentation-scale-reversed",
        setting("training.augmentation.scale", [0.9, 0.1]),
        "training.augmentation.scale",
        "low <= high",
    ),
    case(
        "unknown-optimizer",
        setting("training.optimizer.name", "adamax"),
        "training.optimizer.name",
        "'adam'",
    ),
    case(
        "option-of-another-optimizer",
        setting("training.optimizer.momentum", 0.9),  # momentum is sgd's, not adam's
        "training.optimizer.momentum",
        "unknown key",
    ),
    case(
        "sgd-momentum-1",
        setting("training.optimizer", {"name": "sgd", "momentum": 1}),
        "training.optimizer.momentum",
        "less than 1",
    ),
    case(
        "unknown-scheduler",
        setting("training.scheduler", {"name": "cosin"}),
        "training.scheduler.name",
        "did you mean 'cosine'",
    ),
    case(
        "step-size-0",
        setting("training.scheduler", {"name": "step", "step_size": 0}),
        "training.scheduler.step_size",
        "greater than or equal to 1",
    ),
    case(
        "option-of-another-scheduler",
        setting("training.scheduler.gamma", 0.5),  # the tiny config's cosine has no gamma
        "training.scheduler.gamma",
        "unknown key",
    ),
    case("repeated-seeds", setting("seed", [1, 1]), "seed", "repeats"),
    case("output-dir-placeholder", setting("output_dir", "runs/{nme}"), "output_dir", "{name}"),
    case("no-heads", setting("heads", []), "heads", "at least 1"),
    case("no-data", config(lambda r: r.pop("data")), "data", "required"),
    # cross-references between components
    case(
        "constraint-unknown-task",
        setting("constraints[0].pairs[1]", ["alnm", "nodal"]),
        "constraints[0]",
        "'nodal'",
    ),
    case(
        "constraint-cycle",
        config(_cycle),
        "constraints[0]",
        "cycle",
        "bm -> alnm -> alnm_ge2 -> bm",
    ),
    case(
        "constraint-self-pair",
        setting("constraints[0].pairs", [["bm", "bm"]]),
        "constraints[0]",
        "itself",
    ),
    case(
        "duplicate-task-name",
        config(lambda r: r["heads"].append({"type": "alnm_burden", "min_nodes": 3})),
        "heads[5].name",
        "'alnm_ge3' is used by two heads",
    ),
    case(
        "task-name-not-identifier",
        setting("heads[0]", {"type": "bm", "name": "bm.2"}),
        "heads[0].name",
    ),
    case(
        "loss-kind-vs-head-kind",
        setting("heads[0]", {"type": "bm", "loss": "cross_entropy"}),
        "heads[0].loss.type",
        "binary",
    ),
    case(
        "select-malformed", setting("evaluation.select", "auc"), "evaluation.select", "TASK.METRIC"
    ),
    case(
        "select-unknown-task",
        setting("evaluation.select", "size.auc"),
        "evaluation.select",
        "no task called 'size'",
    ),
    case(
        "select-unconfigured-metric",
        setting("evaluation.select", "mean.f2"),
        "evaluation.select",
        "not in evaluation.metrics",
    ),
    case(
        "stratify-unknown-task",
        setting("data.split.stratify", ["bm", "size"]),
        "data.split.stratify[1]",
        "size",
    ),
    case(
        "weighting-unknown-task",
        setting("weighting", {"type": "equal", "weights": {"nope": 2}}),
        "weighting",
        "nope",
    ),
    # splits
    case(
        "split-fractions-sum-to-1",
        setting("data.split", {"test_fraction": 0.6, "val_fraction": 0.5}),
        "data.split",
        "< 1",
    ),
    case(
        "folds-and-test-fraction",
        setting("data.split", {"folds": 5, "test_fraction": 0.2}),
        "data.split",
        "drop test_fraction",
    ),
    case(
        "one-fold", setting("data.split.folds", 1), "data.split.folds", "greater than or equal to 2"
    ),
    case(
        "split-file-missing",
        config(_split_file),
        "split file not found",
        "/no/such/dir/splits.json",
    ),
    # files named by the config
    case(
        "pretrained-file-missing",
        setting("backbone.pretrained", "/no/such/weights.safetensors"),
        "backbone.pretrained",
        "/no/such/weights.safetensors",
    ),
    case(
        "duplicates-method-md5",
        config(lambda r: r["data"].update(duplicates={"method": "md5"})),
        "data.duplicates",
        "method: unknown hash 'md5'",
    ),
    case(
        "external-named-test",
        setting("evaluation.external", [{"name": "test", "source": "synthetic"}]),
        "evaluation.external[0].name",
        "train, val and test",
    ),
    case(
        "exclude-unknown-image",
        setting("data.exclude", ["images/nope.png"]),
        "data.exclude",
        "'images/nope.png'",
    ),
    case(
        "threshold-on-text-column",
        config(_binary_threshold_on_bm, manifest=True),
        "task bm",
        "bm='benign'",
        "manifest.csv row 2",
    ),
    case(
        "reference-column-missing",
        setting("evaluation.reference_columns.bm", "oracle_size"),
        "evaluation.reference_columns",
        "'oracle_size'",
    ),
    case(
        "split-file-not-json",
        config_with_file(lambda r, t: r["data"]["split"].update(file=_note(t, "notes.txt"))),
        "notes.txt",
        "is not a splits.json",
    ),
    case(
        "pretrained-not-weights",
        config_with_file(lambda r, t: r["backbone"].update(pretrained=_note(t, "weights.pt"))),
        "weights.pt",
        "cannot read weights",
    ),
    case(
        "cache-dir-is-a-file",
        config_with_file(lambda r, t: r["data"].update(cache_dir=_note(t, "cache"))),
        "data.cache_dir",
        "cache",
    ),
    case(
        "manifest-path-is-a-folder",
        config_with_file(
            lambda r, t: r["data"].update(source={"type": "manifest", "path": str(t)})
        ),
        "cannot read manifest",
        "Is a directory",
    ),
    case(
        "pretrained-name-too-long",
        setting("backbone.pretrained", "/tmp/" + "x" * 300),
        "backbone.pretrained",
    ),
    case(
        "cache-dir-nul-byte",
        setting("data.cache_dir", "cache\x00dir"),
        "data.cache_dir",
    ),
    # the YAML file itself
    case("config-file-missing", missing_file, "no-such-config.yaml", "file not found"),
    case(
        "yaml-syntax-error",
        text_file("name: x\ndata:\n  source: synthetic\n  image_size: [1, 2\nheads: [bm]\n"),
        "config.yaml",
        "YAML syntax error",
        "line 5",
    ),
    case(
        "yaml-tab-indent",
        text_file("name: x\n\tdata: 1\n"),
        "config.yaml",
        "YAML syntax error",
        "line 2",
    ),
    case("empty-file", text_file(""), "config.yaml", "the file is empty"),
    case("comment-only-file", text_file("# only a comment\n"), "config.yaml", "the file is empty"),
    case("top-level-list", text_file("- a\n- b\n"), "config.yaml", "expected a mapping", "list"),
    case(
        "top-level-text", text_file("just some words\n"), "config.yaml", "expected a mapping", "str"
    ),
    case("not-utf8", text_file("name: caf\xe9\n".encode("latin-1")), "config.yaml", "cannot read"),
    case(
        "python-object-tag",
        text_file("name: !!python/object:os.system {}\n"),
        "config.yaml",
        "python/object",
        "line 1",
    ),
    case("bad-int-tag", text_file("name: x\nseed: !!int abc\n"), "config.yaml", "YAML"),
    case("recursive-alias", text_file("name: &a [*a]\n"), "config.yaml", "name"),
    case(
        "yaml-empty-int-tag",
        text_file("name: x\nseed: !!int\n"),
        "config.yaml",
        "YAML",
        "line 2",
    ),
    case(
        "yaml-duplicate-key",
        tiny_text(lambda text: text + "name: again\n"),
        "config.yaml",
        "name",
        "duplicate",
    ),
    # values that validate but cannot train (each fails at run time today: exit 1 or 0)
    case(
        "lr-infinite",
        setting("training.optimizer.lr", float("inf")),
        "training.optimizer.lr",
    ),
    case(
        "pos-weight-infinite",
        setting("heads[0]", {"type": "bm", "loss": {"type": "bce", "pos_weight": float("inf")}}),
        "heads[0].loss.pos_weight",
    ),
    case(
        "task-weight-nan",
        setting("weighting", {"type": "equal", "weights": {"bm": float("nan")}}),
        "weighting",
        "bm",
    ),
    case(
        "task-weight-negative",
        config(_negative_weight),
        "weighting",
        "bm",
    ),
    case(
        "split-seed-negative",
        setting("data.split.seed", -1),
        "data.split.seed",
    ),
    case(
        "seed-too-large",
        setting("seed", 10**23),
        "seed",
    ),
]


# --- round two: hostile and odd input (issue 12) ----------------------------------------------


def report_file(filename: str) -> Make:
    """The markdown report writing ``filename`` (an option that names an output file)."""
    return setting("reports", [{"type": "markdown", "filename": filename}])


def named_path(name: str) -> Make:
    """A config with a YAML syntax error saved under an odd file ``name``."""

    def make(tmp_path: Path, phantoms: Path) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("name: [x\n", encoding="utf-8")
        return path

    return make


def special_file(kind: str) -> Make:
    """A config path that is no regular file: a FIFO with no writer, or a device."""

    def make(tmp_path: Path, phantoms: Path) -> Path:
        if kind == "fifo":
            os.mkfifo(tmp_path / "config.yaml")
            return tmp_path / "config.yaml"
        return Path(kind)

    return make


def split_json(document: Any) -> Make:
    """A config whose data.split.file holds ``document`` (JSON)."""

    def mutate(raw: dict[str, Any], tmp_path: Path) -> None:
        path = tmp_path / "splits.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        raw["data"]["split"] = {"file": str(path)}

    return config_with_file(mutate)


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)
"""A 1 KB YAML file whose aliases expand to 10^9 values (the "billion laughs")."""

EXAMPLE_ALIASES = "name: &n [*n]\n"
PART = {"images": [], "patients": []}

CONFIG_CASES += [
    # output files named by options: a plain relative name inside the run directory
    case("report-outside-run", report_file("../notes.txt"), "reports[0].filename", "'..'"),
    case(
        "report-replaces-weights",
        report_file("checkpoints/best.safetensors"),
        "reports[0].filename",
        "written by mtlkit",
    ),
    case("report-empty-name", report_file(""), "reports[0].filename", "empty"),
    case("report-absolute", report_file("/tmp/report.md"), "reports[0].filename", "absolute"),
    case("report-replaces-metrics", report_file("metrics.json"), "reports[0].filename", "mtlkit"),
    case("report-nested-escape", report_file("a/../../x.md"), "reports[0].filename", "'..'"),
    case("report-hidden-name", report_file(".lock"), "reports[0].filename", "hidden"),
    case("report-in-fold-folder", report_file("fold_1/r.md"), "reports[0].filename", "mtlkit"),
    # small files, bounded memory and time
    case("yaml-alias-bomb", text_file(ALIAS_BOMB), "config.yaml", "aliases expand"),
    case("yaml-deep-nesting", text_file("a: " + "[" * 5000), "config.yaml", "nesting", "line 1"),
    case(
        "yaml-deep-mapping",
        text_file("".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v\n"),
        "config.yaml",
        "nesting deeper",
    ),
    case("config-is-dev-zero", special_file("/dev/zero"), "/dev/zero", "not a regular file"),
    case("config-is-a-fifo", special_file("fifo"), "config.yaml", "not a regular file"),
    case("config-is-a-folder", special_file("/tmp"), "/tmp", "Is a directory"),
    case(
        "config-too-large",
        text_file("name: x\n" + "#" * (1 << 20) + "\n"),
        "config.yaml",
        "too large",
    ),
    case(
        "huge-value-echo-clipped",
        setting("training.epochs", "9" * 100_000 + "x"),
        "training.epochs",
        "characters)",
    ),
    # usage errors, never internal errors
    case(
        "batch-size-1",
        setting("training.batch_size", 1),
        "training.batch_size",
        "greater than or equal to 2",
    ),
    case("split-file-no-folds", split_json({"version": 1, "folds": []}), "splits.json", "folds"),
    case("split-file-a-list", split_json([1, 2]), "splits.json", "is not a splits.json"),
    case(
        "split-file-images-text",
        split_json({"train": {"images": "x", "patients": []}, "val": PART, "test": PART}),
        "splits.json",
        "train.images",
    ),
    case(
        "split-file-image-twice",
        split_json(
            {
                "train": {"images": ["a", "b"], "patients": []},
                "val": PART,
                "test": {"images": ["a"], "patients": []},
            }
        ),
        "splits.json",
        "image a is listed twice (train and test)",
    ),
    case(
        "split-file-deep-json",
        split_json(json.loads("[" * 200 + "]" * 200)),
        "splits.json",
    ),
    case(
        "split-file-not-utf8",
        config_with_file(
            lambda r, t: r["data"]["split"].update(file=_note(t, "s.json", b"\xff\xfe{"))
        ),
        "s.json",
        "not JSON",
    ),
    case(
        "columns-not-a-mapping",
        setting("data.source.columns", ["bm", "label"]),
        "data.source.columns",
        "mapping",
    ),
    case(
        "columns-unknown-file-column",
        setting("data.source.columns", {"bm": "label"}),
        "data.source.columns",
        "'label'",
    ),
    # terminal and markup injection: printed as text, never run
    case(
        "control-codes-in-a-value",
        setting("heads[0]", "\x1b]0;owned\x07\x1b[2Jbm"),
        "heads[0].type",
        "\\x1b",
    ),
    case("markup-in-config-name", named_path("x[/]cfg.yaml"), "x[/]cfg.yaml", "YAML syntax error"),
    case("markup-tag-config-name", named_path("[red]cfg.yaml"), "[red]cfg.yaml"),
    case("control-in-config-name", named_path("cfg\x1b[2J.yaml"), "cfg\\x1b[2J.yaml"),
    case(
        "bidi-override-in-value",
        setting("heads[0]", "bm\u202egnp.exe"),
        "heads[0].type",
        "\\u202e",
    ),
    # values YAML gives as booleans are not numbers
    case("epochs-true", setting("training.epochs", True), "training.epochs", "boolean"),
    case(
        "threads-on",
        tiny_text(lambda t: t.replace("threads: 1", "threads: on")),
        "training.threads",
        "boolean",
    ),
    case("in-chans-true", setting("backbone.in_chans", True), "backbone.in_chans", "boolean"),
    case("lr-true", setting("training.optimizer.lr", True), "training.optimizer.lr", "boolean"),
    case("seed-false", setting("seed", False), "seed", "boolean"),
    case("image-size-yes", setting("data.image_size", True), "data.image_size", "boolean"),
    case("min-nodes-true", setting("heads[2].min_nodes", True), "heads[2].min_nodes", "boolean"),
]


@pytest.mark.parametrize("make, expected", CONFIG_CASES)
def test_bad_config_is_refused_with_its_place(make: Make, expected, tmp_path, phantoms, capsys):
    path = make(tmp_path, phantoms)
    text = run_refused(path, tmp_path, capsys)
    assert_names(text, expected)


def test_config_corpus_size():
    assert len(CONFIG_CASES) >= 30


# --- bad data --------------------------------------------------------------------------------


class DataSet:
    """A writable copy of the phantom set; a case breaks one thing in it."""

    def __init__(self, folder: Path):
        self.folder = folder
        with (folder / "manifest.csv").open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            self.rows: list[dict[str, str]] = list(reader)
            self.header: list[str] = list(reader.fieldnames or [])
        self.csv_bytes: bytes | None = None  # set to write the manifest byte for byte
        self.data: dict[str, Any] = {}  # changes to the config's data section
        self.source: dict[str, Any] = {}  # changes to the manifest source's options

    def file(self, index: int, column: str = "image") -> Path:
        return self.folder / self.rows[index][column]

    def write(self) -> Path:
        path = self.folder / "manifest.csv"
        if self.csv_bytes is not None:
            path.write_bytes(self.csv_bytes)
            return path
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, self.header, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        return path


Break = Callable[[DataSet], Any]


def steps(*breaks: Break) -> Break:
    def apply(d: DataSet) -> None:
        for step in breaks:
            step(d)

    return apply


def roi(mode: str) -> Break:
    return lambda d: d.data.update(roi={"mode": mode, "margin": 0.5})


def cells(index: int, **values: str) -> Break:
    return lambda d: d.rows[index].update(values)


def content(index: int, data: bytes | Callable[[bytes], bytes], column: str = "image") -> Break:
    """Replace the bytes of the file a row names (``data`` may transform the old bytes)."""

    def apply(d: DataSet) -> None:
        path = d.file(index, column)
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)

    return apply


def delete(index: int, column: str = "image") -> Break:
    return lambda d: d.file(index, column).unlink()


def folder_instead(index: int) -> Break:
    """The image a row names becomes a folder of that name."""

    def apply(d: DataSet) -> None:
        d.file(index).unlink()
        d.file(index).mkdir()

    return apply


def save(index: int, image: Image.Image, column: str = "image") -> Break:
    return lambda d: image.save(d.file(index, column))


def raw_csv(text: str | bytes) -> Break:
    def apply(d: DataSet) -> None:
        d.csv_bytes = text.encode("utf-8") if isinstance(text, str) else text

    return apply


def lines(edit: Callable[[list[str]], Any]) -> Break:
    """Edit the manifest as a list of text lines (header first)."""

    def apply(d: DataSet) -> None:
        d.write()
        text = (d.folder / "manifest.csv").read_text(encoding="utf-8").splitlines()
        edit(text)
        d.csv_bytes = ("\n".join(text) + "\n").encode("utf-8")

    return apply


def drop_column(name: str) -> Break:
    def apply(d: DataSet) -> None:
        d.header.remove(name)

    return apply


def png_header(width: int, height: int) -> bytes:
    """A PNG file whose IHDR claims ``width`` x ``height`` 8-bit gray pixels (valid CRCs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (1 + min(width, 64)) * min(height, 64))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def same_pixels(source: int, target: int) -> Break:
    """Row ``target``'s image and mask become copies of row ``source``'s (different name)."""

    def apply(d: DataSet) -> None:
        for column in ("image", "mask"):
            shutil.copy(d.file(source, column), d.file(target, column))
        d.rows[target].update({k: d.rows[source][k] for k in ("x0", "y0", "x1", "y1")})

    return apply


def duplicate_row(index: int, **changes: str) -> Break:
    return lambda d: d.rows.append({**d.rows[index], **changes})


def blank_column(name: str) -> Break:
    def apply(d: DataSet) -> None:
        for row in d.rows:
            row[name] = ""

    return apply


def split_file_with_leak(d: DataSet) -> None:
    """splits.json of an earlier run, except that patient p0000 is in train and test."""
    images = [r["image"] for r in d.rows]
    parts = {"train": images[4:], "val": images[2:4], "test": images[:2]}
    parts["train"].append(parts["test"].pop(1))  # p0000_i1: its patient is in test too
    document = {"version": 1, "linked_patients": []}
    patients = {r["image"]: r["patient_id"] for r in d.rows}
    for split, chosen in parts.items():
        document[split] = {"images": chosen, "patients": sorted({patients[i] for i in chosen})}
    path = d.folder / "splits.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    d.data["split"] = {"file": str(path)}


WIDE = Image.new("L", (20, 32), 255)
HEADER = "image,mask,patient_id,x0,y0,x1,y1,bm,alnm_count"
LATIN1_CSV = f"{HEADER}\nimages/p0000_i0.png,masks/p0000_i0.png,Jos\xe9,1,1,9,9,benign,0\n".encode(
    "latin-1"
)

DATA_CASES = [
    # image files
    case(
        "missing-image",
        delete(2),
        "manifest.csv",
        "row 4: image file not found: images/p0001_i0.png",
    ),
    case(
        "zero-byte-image",
        content(2, b""),
        "images/p0001_i0.png (manifest.csv row 4)",
        "cannot read image",
    ),
    case(
        "truncated-png",
        content(2, lambda b: b[: len(b) // 2]),
        "images/p0001_i0.png (manifest.csv row 4)",
        "cannot read image",
    ),
    case(
        "text-file-named-png",
        content(2, b"patient notes, not a picture\n"),
        "images/p0001_i0.png (manifest.csv row 4)",
        "cannot read image",
    ),
    case(
        "png-width-0",
        content(2, png_header(0, 32)),
        "images/p0001_i0.png (manifest.csv row 4)",
        "cannot read image",
    ),
    case(
        "png-height-0",
        content(2, png_header(32, 0)),
        "images/p0001_i0.png (manifest.csv row 4)",
        "cannot read image",
    ),
    case(
        "png-decompression-bomb",
        content(2, png_header(100_000, 100_000)),
        "images/p0001_i0.png (manifest.csv row 4)",
        "too large",
    ),
    case(
        "image-is-a-folder",
        folder_instead(2),
        "row 4: image file not found: images/p0001_i0.png",
    ),
    case("empty-image-path", cells(2, image=""), "manifest.csv", "row 4: image path is empty"),
    case(
        "path-escapes-folder",
        cells(2, image="../x.png"),
        "manifest.csv",
        "row 4: image '../x.png' is outside the manifest's folder",
    ),
    case(
        "absolute-path-outside",
        cells(2, image="/etc/hostname"),
        "manifest.csv",
        "row 4: image '/etc/hostname' is outside the manifest's folder",
    ),
    # masks and boxes
    case(
        "unreadable-mask",
        steps(roi("mask"), content(2, b"\x89PNG broken", column="mask")),
        "images/p0001_i0.png (manifest.csv row 4)",
        "cannot read image",
        "masks/p0001_i0.png",
    ),
    case(
        "missing-mask",
        delete(2, "mask"),
        "manifest.csv",
        "row 4: mask file not found: masks/p0001_i0.png",
    ),
    case(
        "mask-wrong-size",
        steps(roi("mask"), save(2, WIDE, "mask")),
        "images/p0001_i0.png (manifest.csv row 4): its mask is 20x32 but the image is 32x32",
    ),
    case(
        "empty-mask",
        steps(roi("mask"), save(2, Image.new("L", (32, 32), 0), "mask")),
        "images/p0001_i0.png (manifest.csv row 4): its mask is empty",
    ),
    case(
        "box-outside-image",
        steps(roi("box"), cells(2, x1="40")),
        "images/p0001_i0.png (manifest.csv row 4)",
        "box (3, 9, 40, 18) extends outside the 32x32 image",
    ),
    case(
        "box-x1-not-after-x0",
        cells(2, x1="3"),
        "manifest.csv",
        "row 4: box (3, 9, 3, 18) needs 0 <= x0 < x1",
    ),
    case(
        "box-negative",
        cells(2, y0="-1"),
        "manifest.csv",
        "row 4: box (3, -1, 18, 18) needs 0 <= x0 < x1 and 0 <= y0 < y1",
    ),
    case(
        "box-not-a-number",
        cells(2, x0="a"),
        "manifest.csv",
        "row 4: box a, 9, 18, 18 is not four integers",
    ),
    case(
        "box-not-an-integer",
        cells(2, x0="2.5"),
        "manifest.csv",
        "row 4: box 2.5, 9, 18, 18 is not four integers",
    ),
    case(
        "box-incomplete",
        cells(2, y1=""),
        "manifest.csv",
        "row 4: box 3, 9, 18, (empty) is not four integers",
    ),
    # labels
    case(
        "benign-with-nodes",
        cells(4, alnm_count="2"),
        "manifest.csv row 6), task alnm: bm='benign' means negative, but alnm_count='2'",
    ),
    case(
        "negative-count",
        cells(2, alnm_count="-1"),
        "manifest.csv row 4), task alnm: alnm_count='-1' is not a count",
    ),
    case(
        "non-integer-count",
        cells(2, alnm_count="1.5"),
        "manifest.csv row 4), task alnm: alnm_count='1.5' is not a count",
    ),
    case(
        "count-text",
        cells(2, alnm_count="many"),
        "manifest.csv row 4), task alnm",
        "alnm_count='many'",
    ),
    case(
        "unknown-bm-value",
        cells(2, bm="borderline"),
        "manifest.csv row 4), task bm: bm='borderline' is neither positive nor negative",
    ),
    case("task-without-any-label", blank_column("bm"), "no image has a known label for task bm"),
    case(
        "label-column-missing",
        drop_column("alnm_count"),
        "task alnm reads column 'alnm_count', which the data does not have",
    ),
    case(
        "image-path-with-nul-byte",
        cells(2, image="images/p\x00.png"),
        "manifest.csv",
        "row 4: image",
    ),
    case(
        "image-name-too-long",
        cells(2, image="x" * 300 + ".png"),
        "manifest.csv",
        "row 4: image",
    ),
    # repeated rows and contradictions
    case(
        "duplicate-row",
        duplicate_row(3),
        "image 'images/p0002_i0.png' is listed twice (manifest.csv row 5 and",
        "a duplicate row",
    ),
    case(
        "same-image-two-labels",
        duplicate_row(3, bm="malignant", alnm_count="1"),
        "image 'images/p0002_i0.png' is listed twice (manifest.csv row 5 and",
        "with different labels",
    ),
    case(
        "identical-pixels-two-labels",
        same_pixels(3, 2),
        "images/p0001_i0.png",
        "images/p0002_i0.png",
        "are the same image with different labels",
    ),
    case(
        "split-file-patient-in-two-splits",
        split_file_with_leak,
        "splits.json",
        "patient p0000 is in test, train",
    ),
    # the CSV file itself
    case(
        "csv-not-utf8",
        raw_csv(LATIN1_CSV),
        "manifest.csv",
        "not UTF-8",
        "line 2",
    ),
    case("csv-empty", raw_csv(b""), "manifest.csv", "the file is empty"),
    case("csv-header-only", raw_csv(HEADER + "\n"), "manifest.csv", "no images"),
    case(
        "csv-missing-image-column", drop_column("image"), "manifest.csv", "missing column(s) image"
    ),
    case(
        "csv-row-too-long",
        lines(lambda t: t.__setitem__(3, t[3] + ",surplus")),  # line 4 gets one more cell
        "manifest.csv",
        "row 4 has more cells than the header",
    ),
    case(
        "csv-duplicated-column",
        lines(lambda t: t.__setitem__(0, t[0].replace("alnm_count", "bm"))),  # header
        "manifest.csv",
        "duplicated column(s) bm",
    ),
    case(
        "csv-blank-line-keeps-numbering",
        # a blank line 3 moves the row of images/nope.png from line 4 to line 5
        steps(cells(2, image="images/nope.png"), lines(lambda t: t.insert(2, ""))),
        "manifest.csv",
        "row 5: image file not found: images/nope.png",
    ),
    case(
        "configured-patient-column-missing",
        lambda d: d.source.update(patient_column="case_id"),
        "manifest.csv",
        "missing column(s) case_id",
    ),
    case(
        "manifest-missing",
        lambda d: d.source.update(path=str(d.folder / "nope.csv")),
        "manifest not found",
        "nope.csv",
    ),
]


# --- round two: hostile and odd data (issue 12) -----------------------------------------------


def fifo_manifest(d: DataSet) -> None:
    os.mkfifo(d.folder / "pipe.csv")
    d.source.update(path=str(d.folder / "pipe.csv"))


def fifo_image(index: int) -> Break:
    def apply(d: DataSet) -> None:
        d.file(index).unlink()
        os.mkfifo(d.file(index))

    return apply


def dicom_declaring(width: int, height: int, deflated_bytes: int = 0) -> bytes:
    """A small DICOM file whose header declares ``width`` x ``height`` 8-bit pixels; with
    ``deflated_bytes``, the deflated transfer syntax whose data set inflates to that many."""
    import io as _io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    syntax = DeflatedExplicitVRLittleEndian if deflated_bytes else ExplicitVRLittleEndian
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    if not deflated_bytes:
        ds.PixelData = b"\x00" * 64
        buffer = _io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()
    return deflated_dicom(ds, deflated_bytes)


def deflated_dicom(ds, size: int) -> bytes:
    """``ds`` (without pixel data) + pixel data of ``size`` zero bytes, deflated in pieces."""
    import io as _io

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    head = _io.BytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    meta_out = DicomBytesIO()
    meta_out.is_little_endian, meta_out.is_implicit_VR = True, False
    write_file_meta_info(meta_out, ds.file_meta, enforce_standard=True)
    head.write(meta_out.getvalue())
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    pixel_header = b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", size)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    start = packer.compress(body.getvalue() + pixel_header) + packer.flush(zlib.Z_FULL_FLUSH)
    # after a full flush the compressor starts afresh: one compressed block of zeros can be
    # repeated, which builds a 1.6 GB bomb in a fraction of a second
    zeros = packer.compress(b"\x00" * (1 << 24)) + packer.flush(zlib.Z_FULL_FLUSH)
    return head.getvalue() + start + zeros * (size >> 24) + packer.flush()


def mask_16_bit(index: int) -> Break:
    """Row ``index``'s mask as a 16-bit PNG whose lesion is 1 (not 65535)."""

    def apply(d: DataSet) -> None:
        path = d.file(index, "mask")
        lesion = np.asarray(Image.open(path).convert("L")) > 0
        pixels = lesion.astype("<u2")
        Image.frombytes("I;16", pixels.shape[::-1], pixels.tobytes()).save(path)
        d.data["roi"] = {"mode": "mask", "margin": 0.5}

    return apply


def with_cache(d: DataSet) -> None:
    d.data["cache_dir"] = str(d.folder.parent / "cache")


def cached_refusal(d: DataSet) -> None:
    """A cache folder, and one unreadable image: the run is refused."""
    with_cache(d)
    d.file(2).write_bytes(b"not an image")


def split_file_listing_twice(d: DataSet) -> None:
    split_file_with_leak(d)
    path = d.folder / "splits.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["train"]["images"] = [
        i for i in document["train"]["images"] if i != "images/p0000_i1.png"
    ]
    document["val"]["images"].append(document["test"]["images"][0])  # in val and test
    path.write_text(json.dumps(document), encoding="utf-8")


ESC_NAME = "images/\x1b]0;owned\x07\x1b[2J.png"

DATA_CASES += [
    # bounded reading
    case("manifest-is-a-fifo", fifo_manifest, "pipe.csv", "not a regular file"),
    case("manifest-is-dev-zero", lambda d: d.source.update(path="/dev/zero"), "/dev/zero"),
    case(
        "image-is-a-fifo",
        fifo_image(2),
        "row 4: image file not found: images/p0001_i0.png",
    ),
    case(
        "dicom-declaring-huge-image",
        steps(
            lambda d: (d.folder / "images" / "big.dcm").write_bytes(dicom_declaring(40000, 40000)),
            cells(2, image="images/big.dcm"),
        ),
        "images/big.dcm",
        "too large to read safely",
    ),
    case(
        "dicom-deflate-bomb",
        steps(
            lambda d: (d.folder / "images" / "bomb.dcm").write_bytes(
                dicom_declaring(24000, 24000, deflated_bytes=600 << 20)
            ),
            cells(2, image="images/bomb.dcm"),
        ),
        "images/bomb.dcm",
        "too large to read safely",
    ),
    case(
        "png-between-pillow-limits",
        content(2, png_header(10_000, 10_000)),  # Pillow only warns; mtlkit's limit refuses
        "images/p0001_i0.png (manifest.csv row 4)",
        "too large to read safely",
    ),
    # terminal and markup injection
    case("image-name-with-escapes", cells(2, image=ESC_NAME), "row 4: image", "\\x1b"),
    case(
        "image-name-with-markup",
        cells(2, image="images/[red]x[/].png"),
        "row 4: image file not found: images/[red]x[/].png",
    ),
    case("label-with-escapes", cells(2, bm="\x1b[2Jborderline"), "task bm", "\\x1b[2J"),
    # silently accepted values
    case("count-1e1", cells(2, alnm_count="1e1"), "alnm_count='1e1' is not a count"),
    case(
        "count-arabic-digits",
        cells(2, alnm_count="\u0661"),
        "task alnm",
        "is not a number",
    ),
    case("count-underscore", cells(2, alnm_count="1_0"), "alnm_count='1_0' is not a number"),
    case("count-true", cells(2, alnm_count="true"), "alnm_count='true' is not a number"),
    case(
        "split-file-image-twice",
        split_file_listing_twice,
        "splits.json",
        "is listed twice (val and test)",
    ),
    # refused runs leave no cache entries (the test checks the cache folder stays empty)
    case("refused-with-cache", cached_refusal, "row 4", "cannot read image"),
    case(
        "refused-with-cache-by-labels",
        steps(with_cache, cells(5, bm="borderline")),
        "bm='borderline'",
    ),
    case(
        "refused-with-cache-by-split-file",
        steps(with_cache, split_file_listing_twice),
        "is listed twice",
    ),
    # external-set style sources: a mapped column that the file lacks
    case(
        "columns-maps-missing-column",
        lambda d: d.source.update(columns={"bm": "diagnosis"}),
        "data.source.columns",
        "'diagnosis'",
        "columns: bm, alnm_count",
    ),
    case(
        "no-label-names-the-columns",
        blank_column("bm"),
        "no image has a known label for task bm (it reads column(s) 'bm'; the data has columns:",
        "columns: {bm: label}",
    ),
]


@pytest.fixture
def dataset(phantoms, tmp_path) -> DataSet:
    folder = tmp_path / "set"
    shutil.copytree(phantoms, folder)
    return DataSet(folder)


def data_config(d: DataSet, tmp_path: Path) -> Path:
    raw = tiny_raw()
    raw["output_dir"] = str(tmp_path / "runs" / "{name}")
    raw["data"]["source"] = {"type": "manifest", "path": str(d.write()), **d.source}
    raw["data"].update(d.data)
    return write_yaml(tmp_path / "config.yaml", raw)


@pytest.mark.parametrize("make, expected", DATA_CASES)
def test_bad_data_is_refused_with_its_place(make: Break, expected, dataset, tmp_path, capsys):
    make(dataset)
    path = data_config(dataset, tmp_path)
    text = run_refused(path, tmp_path, capsys)
    assert_names(text, expected)
    code = main(["data", "check", str(path), "--quiet"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert code == 2, captured.out + captured.err
    assert_names(flat(captured.out + captured.err), expected)
    assert_no_control(captured.out + captured.err)
    cache = dataset.data.get("cache_dir")
    if cache:  # nothing persists from a refused run, cache entries included
        assert not list(Path(cache).rglob("*.npz"))


def test_data_corpus_size():
    assert len(DATA_CASES) >= 30


def gray_variants() -> dict[str, Callable[[np.ndarray], Image.Image]]:
    def palette(pixels: np.ndarray) -> Image.Image:
        image = Image.frombytes("P", pixels.shape[::-1], pixels.tobytes())
        image.putpalette([v for level in range(256) for v in (level, level, level)])
        return image

    return {
        "16-bit": lambda p: Image.frombytes(
            "I;16", p.shape[::-1], (p.astype("<u2") * 257).tobytes()
        ),
        "palette": palette,
        "rgba": lambda p: Image.fromarray(np.dstack([p, p, p, np.full_like(p, 255)])),
        "rgb": lambda p: Image.fromarray(np.dstack([p, p, p])),
    }


def test_supported_image_variants_are_not_bad_inputs(dataset, tmp_path, capsys):
    from mtlkit.plugins.manifest import load_grayscale

    originals = {}
    for index, (mode, convert) in enumerate(gray_variants().items()):
        path = dataset.file(index)
        pixels = np.asarray(Image.open(path).convert("L"))
        convert(pixels).save(path)
        originals[mode] = (path, pixels)
    code = main(["data", "check", str(data_config(dataset, tmp_path)), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "no problems found" in flat(captured.out)
    for mode, (path, pixels) in originals.items():
        assert Image.open(path).mode != "L", mode
        np.testing.assert_array_equal(load_grayscale(path), pixels, err_msg=mode)
