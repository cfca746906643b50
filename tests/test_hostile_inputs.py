"""Hostile and odd input beyond the bad-input corpus (issue 12): files mtlkit reads back
(checkpoints, training states, split files, cache entries, run outputs) under any bytes,
bounded memory on tiny bombs, writes that must stay inside the run directory, the run
directory's lock, refused runs that leave no cache, CSV formula injection, and external
sets evaluated through a column mapping."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tiny_raw, write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save
from test_bad_inputs import ALIAS_BOMB, assert_no_control, dicom_declaring, flat

from mtlkit import UsageError
from mtlkit.cli import main
from mtlkit.data.disk_cache import DiskCache
from mtlkit.data.split_file import read_split_file
from mtlkit.errors import MtlError
from mtlkit.files import RunLock, output_name_problem
from mtlkit.plugins.synthetic.phantoms import (
    PhantomSettings,
    generate_phantoms,
    write_phantom_set,
)
from mtlkit.text import csv_cell, shown
from mtlkit.training.checkpoint import FORMAT as WEIGHTS_FORMAT
from mtlkit.training.checkpoint import read_metadata
from mtlkit.training.state import FORMAT as STATE_FORMAT
from mtlkit.training.state import load_state


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """No line wrapping by rich, so that long file names stay whole in the output."""
    monkeypatch.setenv("COLUMNS", "2000")


# --- readers of files mtlkit wrote: any bytes give a usage error or a clean load ------------

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner)
    ),
    max_leaves=20,
)
metadata_text = st.one_of(
    st.text(max_size=40), json_values.map(json.dumps), st.just("{"), st.just("[]")
)


def _safetensors(path: Path, metadata: dict[str, str], tensors=None) -> Path:
    import torch

    path.write_bytes(save(tensors or {"x": torch.zeros(1)}, metadata=metadata))
    return path


@SETTINGS
@given(
    config=metadata_text,
    info=st.one_of(st.none(), metadata_text),
    plugins=st.one_of(st.none(), metadata_text),
)
def test_weights_metadata_reader_never_crashes(tmp_path, config, info, plugins):
    meta = {"format": WEIGHTS_FORMAT, "config": config}
    meta.update({k: v for k, v in (("info", info), ("plugins", plugins)) if v is not None})
    path = _safetensors(tmp_path / "w.safetensors", meta)
    try:
        read_metadata(path)
    except UsageError as exc:
        assert str(path) in str(exc)


@SETTINGS
@given(state=st.one_of(metadata_text, json_values.map(json.dumps)))
def test_training_state_reader_never_crashes(tmp_path, state):
    path = _safetensors(tmp_path / "s.safetensors", {"format": STATE_FORMAT, "state": state})
    try:
        load_state(path)
    except UsageError as exc:
        assert str(path) in str(exc)


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_bytes_as_weights_or_state_are_usage_errors(tmp_path, data):
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    for reader in (read_metadata, load_state):
        try:
            reader(path)
        except UsageError as exc:
            assert str(path) in str(exc)


@SETTINGS
@given(document=st.one_of(json_values, st.binary(max_size=60)))
def test_split_file_reader_never_crashes(tmp_path, document):
    from mtlkit.data.samples import Sample

    path = tmp_path / "splits.json"
    if isinstance(document, bytes):
        path.write_bytes(document)
    else:
        path.write_text(json.dumps(document), encoding="utf-8")
    samples = [Sample(f"i{n}", f"p{n}", {}, lambda: np.zeros((4, 4), np.uint8)) for n in range(3)]
    try:
        read_split_file(path, samples, [s.patient_id for s in samples])
    except UsageError as exc:
        assert str(path) in str(exc)


@SETTINGS
@given(
    data=st.binary(max_size=400),
    arrays=st.dictionaries(
        st.sampled_from(["roi", "size", "digest", "phash", "has_phash", "other"]),
        st.sampled_from(
            [
                np.zeros((8, 8), np.uint8),
                np.zeros((3, 3), np.int64),
                np.array("x"),
                np.array([1, 2]),
                np.array(True),
                np.zeros(0, np.uint8),
            ]
        ),
        max_size=6,
    ),
)
def test_cache_entries_of_any_content_are_rebuilt_or_used(tmp_path, data, arrays):
    from mtlkit.data.scan import _from_entry

    cache = DiskCache(tmp_path / "cache")
    key = "ab" + "0" * 62
    path = cache._path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    assert cache.get(key) is None or isinstance(cache.get(key), dict)
    np.savez(path, **arrays)
    record = _from_entry(cache.get(key), 8)  # never an exception: None means "rebuild"
    if record is not None:
        assert record[0].shape == (8, 8)


# --- bounded memory and time ---------------------------------------------------------------

BOMB_SCRIPT = """
import sys, time
from pathlib import Path
from mtlkit.errors import MtlError
from mtlkit.config.loading import load_config
from mtlkit.data.reading import load_grayscale

def status(key):
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(x for x in lines if x.startswith(key)).split()[1])

# importing torch alone is several hundred MB resident: measure what the bombs add to it
Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
before = status("VmRSS:")
start = time.monotonic()
for attempt in (lambda: load_config(Path(sys.argv[1])), lambda: load_grayscale(Path(sys.argv[2]))):
    try:
        attempt()
    except MtlError as exc:
        print("refused:", str(exc)[:200])
print("seconds", time.monotonic() - start)
print("added_kb", status("VmHWM:") - before)
"""


def test_alias_and_dicom_bombs_are_refused_fast_in_little_memory(tmp_path):
    """The 1 KB alias bomb and a 1.5 MB deflated DICOM declaring 40000 x 40000 pixels: both
    refused in under 5 s, adding under 500 MB to the resident memory of a process that has
    imported mtlkit (torch alone takes several hundred MB: that part is not the readers')."""
    config = tmp_path / "bomb.yaml"
    config.write_text(ALIAS_BOMB, encoding="utf-8")
    dicom = tmp_path / "bomb.dcm"
    dicom.write_bytes(dicom_declaring(40000, 40000, deflated_bytes=1600 << 20))
    assert dicom.stat().st_size < 2 << 20
    result = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, str(config), str(dicom)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("refused:") for line in lines) == 2, result.stdout
    seconds = float(next(x for x in lines if x.startswith("seconds")).split()[1])
    rss_mb = int(next(x for x in lines if x.startswith("added_kb")).split()[1]) / 1024
    assert seconds < 5, result.stdout
    assert rss_mb < 500, result.stdout


def test_decompression_warnings_never_reach_stderr(tmp_path, capsys):
    from test_bad_inputs import png_header

    from mtlkit.data.reading import load_grayscale

    path = tmp_path / "big.png"
    path.write_bytes(png_header(10_000, 10_000))
    with pytest.raises(MtlError, match="too large"):
        load_grayscale(path)
    assert "DecompressionBombWarning" not in capsys.readouterr().err


# --- writes stay inside the run directory ---------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../x.md",
        "/etc/x",
        "checkpoints/best.safetensors",
        "",
        " ",
        "a//b",
        "./x",
        ".x",
        "config.yaml",
        "seed_1/x.md",
        "a\\..\\b",
        "x\x1b.md",
        "a/../b",
    ],
)
def test_output_names_outside_or_over_run_files_are_refused(name):
    assert output_name_problem(name)


@pytest.mark.parametrize("name", ["report.md", "reports/summary.md", "my report.html"])
def test_plain_output_names_are_accepted(name):
    assert output_name_problem(name) is None


def test_validate_refuses_a_report_writing_outside_the_run(tmp_path, capsys):
    raw = tiny_raw(reports=[{"type": "markdown", "filename": "../notes.txt"}])
    code = main(["validate", str(write_yaml(tmp_path / "c.yaml", raw))])
    assert code == 2
    assert "reports[0].filename" in flat(capsys.readouterr().err)


def test_validate_prints_a_markup_path_as_text(tmp_path, capsys):
    path = tmp_path / "x[red]cfg.yaml"
    write_yaml(path, tiny_raw())
    assert main(["validate", str(path)]) == 0
    assert "x[red]cfg.yaml: valid" in flat(capsys.readouterr().out)


# --- the run directory ----------------------------------------------------------------------


def test_a_locked_run_directory_is_refused_and_resume_too(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    config = write_yaml(tmp_path / "c.yaml", tiny_raw())
    with RunLock(out):
        assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
        err = flat(capsys.readouterr().err)
        assert "another mtl process" in err
        from mtlkit.config.loading import dump_config, load_config

        (out / "config.yaml").write_text(dump_config(load_config(config)), encoding="utf-8")
        assert main(["resume", str(out), "--quiet"]) == 2  # refused before loading any data
        assert "another mtl process" in flat(capsys.readouterr().err)
        with pytest.raises(UsageError, match="another mtl process"):
            RunLock(out)
    assert not (out / ".mtl-lock").exists()


def test_a_dangling_symlink_as_out_is_named(tmp_path, capsys):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    config = write_yaml(tmp_path / "c.yaml", tiny_raw())
    assert main(["run", str(config), "--out", str(tmp_path / "link"), "--quiet"]) == 2
    assert "symbolic link" in flat(capsys.readouterr().err)


def test_refused_runs_write_no_cache(tmp_path, capsys):
    folder = tmp_path / "set"
    settings_ = PhantomSettings(patients=12, images_min=1, images_max=2, image_size=32)
    write_phantom_set(generate_phantoms(settings_, seed=0), folder)
    first = sorted((folder / "images").iterdir())[0]
    first.write_bytes(b"not an image")
    raw = tiny_raw()
    raw["data"]["source"] = {"type": "manifest", "path": str(folder / "manifest.csv")}
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    config = write_yaml(tmp_path / "c.yaml", raw)
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert main(["data", "check", str(config), "--quiet"]) == 2
    capsys.readouterr()
    assert not list((tmp_path / "cache").rglob("*.npz"))
    # and refused by an external set after the training data passed: still nothing
    shutil.copy(sorted((folder / "images").iterdir())[1], first)
    raw["evaluation"]["external"] = [
        {"name": "ext", "source": {"type": "manifest", "path": "/no/such.csv"}}
    ]
    config = write_yaml(tmp_path / "c.yaml", raw)
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    capsys.readouterr()
    assert not list((tmp_path / "cache").rglob("*.npz"))


# --- text printed or stored ------------------------------------------------------------------


def test_argparse_errors_print_no_control_characters(capsys):
    assert main(["run", "c\x1b[2J.yaml", "--bogus\x1b]0;x\x07"]) == 2
    assert main(["no-such-command\x1b[2J"]) == 2
    captured = capsys.readouterr()
    assert_no_control(captured.out + captured.err)
    assert "\\x1b[2J" in captured.err


def test_shown_text_has_no_control_characters_or_markup():
    text = shown("a\x1b]0;title\x07b\x1b[2J[red]c[/]\u202e\r")
    assert_no_control(text)
    assert "\\x1b]0;title\\x07" in text and "\\[red]" in text


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_csv_text_cells_never_start_a_formula(cell):
    assert csv_cell(cell).startswith("'")


def test_predictions_csv_escapes_formula_ids():
    import csv
    import io

    from mtlkit.evaluation.documents import predictions_csv
    from mtlkit.results import Predictions

    class Head:
        name, kind, classes = "bm", "binary", None

    part = Predictions(
        split="test",
        image_ids=['=HYPERLINK("x")', "ok"],
        patient_ids=["@p", "-1"],
        targets={"bm": np.array([1.0, 0.0])},
        probabilities={"bm": np.array([0.5, 0.25])},
    )
    rows = list(csv.reader(io.StringIO(predictions_csv([part], [Head()]))))
    assert rows[1][0] == '\'=HYPERLINK("x")' and rows[1][1] == "'@p"
    assert rows[2][1] == "'-1" and rows[2][0] == "ok"


# --- external sets: data.exclude is the training data's, columns map the file's names --------


def test_evaluate_a_busi_model_on_a_set_whose_label_column_is_label(tmp_path, capsys):
    from mtlkit.config.loading import load_config
    from mtlkit.engine import Engine
    from mtlkit.training.checkpoint import save_weights

    config = load_config(ROOT / "configs" / "busi.yaml", ["training.device=cpu"])
    assert config.data.exclude  # the shipped config leaves two BUSI images out
    engine = Engine(config)
    checkpoint = tmp_path / "best.safetensors"
    save_weights(engine.build_model(), checkpoint, config, {"epoch": 0})

    folder = tmp_path / "other-hospital"
    settings_ = PhantomSettings(patients=8, images_min=1, images_max=1, image_size=32)
    write_phantom_set(generate_phantoms(settings_, seed=3), folder)
    manifest = folder / "manifest.csv"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    lines[0] = ",".join("label" if c == "bm" else c for c in lines[0].split(","))
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = {"type": "manifest", "path": str(manifest)}
    data = tmp_path / "other.yaml"

    write_yaml(data, {"name": "other", "source": source})
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--quiet"]
    assert main([*args, "--device", "cpu"]) == 2
    err = flat(capsys.readouterr().err)
    assert "reads column(s) 'bm'" in err and "label" in err  # names looked-for and found columns

    write_yaml(data, {"name": "other", "source": {**source, "columns": {"bm": "label"}}})
    assert main([*args, "--device", "cpu", "--out", str(tmp_path / "eval")]) == 0, (
        capsys.readouterr().err
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["sets"]["other"]["tasks"]["bm"]["n"] == 8
    assert main([*args, "--device", "gpu"]) == 2
    assert "--device" in flat(capsys.readouterr().err)


# --- a finished and an interrupted run, damaged ------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("finished")
    raw = tiny_raw()
    raw["training"]["epochs"] = 1
    raw["reports"] = ["summary"]
    config = write_yaml(base / "c.yaml", raw)
    assert main(["run", str(config), "--out", str(base / "run"), "--quiet"]) == 0
    return base / "run"


def _damaged(finished_run: Path, tmp_path: Path, damage) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    damage(run)
    return run


def _state(run: Path, metadata: dict[str, str]) -> None:
    (run / "metrics.json").unlink()  # unfinished: resume reads the state
    _safetensors(run / "checkpoints" / "state.safetensors", metadata)


DAMAGES = {
    "metrics-truncated": (
        lambda r: (r / "metrics.json").write_text((r / "metrics.json").read_text()[:40]),
        "metrics.json",
    ),
    "metrics-a-list": (lambda r: (r / "metrics.json").write_text("[1]"), "metrics.json"),
    "environment-damaged": (
        lambda r: (r / "environment.json").write_text('{"data": 3}'),
        "environment.json",
    ),
    "state-metadata-not-json": (
        lambda r: _state(r, {"format": STATE_FORMAT, "state": "{"}),
        "state.safetensors",
    ),
    "state-lacks-tensors": (
        lambda r: _state(
            r,
            {
                "format": STATE_FORMAT,
                "state": json.dumps(
                    {
                        "format": STATE_FORMAT,
                        "epoch": 1,
                        "scheduler": {},
                        "scaler": {},
                        "history": [],
                        "totals": {},
                        "config_fingerprint": "x",
                        "best": {"epoch": None, "score": None},
                        "optimizer": {"param_groups": [], "scalars": {}},
                        "rng": {
                            "python": [3, [1], None],
                            "numpy": ["MT19937", 0, 0, 0.0],
                            "cuda": 0,
                        },
                    }
                ),
            },
        ),
        "rng.loader",
    ),
    "state-is-a-folder": (
        lambda r: (
            (r / "metrics.json").unlink(),
            (r / "checkpoints" / "state.safetensors").mkdir(),
        ),
        "state.safetensors",
    ),
}


@pytest.mark.parametrize("name", list(DAMAGES))
def test_resume_of_a_damaged_run_names_the_file(name, finished_run, tmp_path, capsys):
    damage, expected = DAMAGES[name]
    run = _damaged(finished_run, tmp_path, damage)
    code = main(["resume", str(run), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "internal error" not in captured.err
    assert expected in flat(captured.err)
    assert not (run / ".mtl-lock").exists()


WEIGHTS_DAMAGES = {
    "metadata-not-json": {"format": WEIGHTS_FORMAT, "config": "{"},
    "no-config": {"format": WEIGHTS_FORMAT},
    "config-a-list": {"format": WEIGHTS_FORMAT, "config": "[]"},
    "config-without-training": {"format": WEIGHTS_FORMAT, "config": '{"heads": []}'},
    "plugins-not-a-list": {"format": WEIGHTS_FORMAT, "config": "{}", "plugins": '{"a": 1}'},
    "foreign-format": {"format": "other"},
}


@pytest.mark.parametrize("name", list(WEIGHTS_DAMAGES))
def test_evaluate_with_a_damaged_checkpoint_names_the_file(name, tmp_path, capsys):
    checkpoint = _safetensors(tmp_path / "bad.safetensors", WEIGHTS_DAMAGES[name])
    data = write_yaml(tmp_path / "d.yaml", {"name": "ext", "source": "synthetic"})
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--quiet"])
    err = flat(capsys.readouterr().err)
    assert code == 2, err
    assert "bad.safetensors" in err and "internal error" not in err


def test_synth_refuses_bad_settings_and_paths(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--seed", "-1"]) == 2
    assert main(["data", "synth", "--out", "/proc/mtlkit-test/s", "--patients", "3"]) == 2
    err = flat(capsys.readouterr().err)
    assert "--seed" in err and "/proc/mtlkit-test/s" in err


def test_python_warnings_are_one_short_line(tmp_path, capsys, monkeypatch):

    from rich.console import Console

    from mtlkit.cli import _shown_warning

    console = Console(stderr=True)
    show = _shown_warning(console)
    show(UserWarning("torch says \x1b[2J hi"), UserWarning, "/x/torch/y.py", 3)
    err = capsys.readouterr().err
    assert "warning: torch says \\x1b[2J hi" in flat(err) and "/x/torch" not in err


@pytest.mark.parametrize("deflated", [0, 600 << 20], ids=["declared", "deflate-bomb"])
def test_the_dicom_source_refuses_huge_images_from_the_header(tmp_path, deflated):
    from mtlkit import DataError
    from mtlkit.plugins.dicom import DicomOptions, dicom_source

    (tmp_path / "a.dcm").write_bytes(dicom_declaring(30000, 30000, deflated_bytes=deflated))
    start = time.monotonic()
    with pytest.raises(DataError, match="too large"):
        dicom_source(DicomOptions(root=str(tmp_path)))
    assert time.monotonic() - start < 5


def test_ctrl_c_while_mtl_is_importing_is_short(tmp_path):
    import signal

    from conftest import MTL

    process = subprocess.Popen(
        [str(MTL), "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.4)  # importing torch and the plugins takes longer than this
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("mtl finished importing before the signal arrived")
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err


def test_importing_mtlkit_as_a_library_keeps_the_default_ctrl_c():
    import signal

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
