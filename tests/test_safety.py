"""Files mtlkit reads are never executed, files it writes are never half-written, and text
it writes into markup is escaped."""

from __future__ import annotations

import os
import pickle

import pytest
from conftest import tiny_raw, write_yaml

from mtlkit import Engine, OutputError, UsageError, load_config, run
from mtlkit.cli import main
from mtlkit.files import atomic_write_text
from mtlkit.plugins.reports import markdown_text


class _Exploit:
    """Unpickling this creates a marker file: proof that the pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "run"
    raw = tiny_raw(name="safe")
    raw["training"]["epochs"] = 1
    run(load_config(raw), out_dir=out)
    return out


def test_a_pickle_given_as_checkpoint_is_refused_and_never_executed(trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "model.safetensors"
    crafted.write_bytes(pickle.dumps({"backbone.conv1.weight": _Exploit(marker)}))
    data = write_yaml(
        tmp_path / "d.yaml",
        {"name": "b", "source": {"type": "synthetic", "patients": 6, "image_size": 32}},
    )
    assert main(["evaluate", "--checkpoint", str(crafted), "--data", str(data)]) == 2
    assert "not a readable mtlkit weights file" in " ".join(capsys.readouterr().err.split())
    engine = Engine(load_config(trained / "config.yaml"))
    with pytest.raises(UsageError):
        engine.load_checkpoint(crafted)
    assert not marker.exists()


def test_a_checkpoint_of_another_model_names_the_differing_tasks(trained):
    raw = tiny_raw(name="other")
    raw["heads"] = [
        "bm",
        "alnm",
        {
            "type": "binary",
            "name": "her2",
            "label": "bm",
            "positive": ["malignant"],
            "negative": ["benign"],
        },
    ]
    raw["constraints"] = []
    raw["evaluation"]["reference_columns"] = {}
    engine = Engine(load_config(raw))
    with pytest.raises(UsageError) as info:
        engine.load_checkpoint(trained / "checkpoints" / "best.safetensors")
    message = str(info.value)
    assert "does not fit this model" in message and "heads.her2" in message
    assert "only in the checkpoint: alnm_ge2, alnm_ge3, alnm_ge4; only in this config: her2" in (
        message
    )


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def full_disk(fd):  # the disk fills up while the data is flushed to it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match="No space left on device; its previous content"):
        atomic_write_text(target, "new content")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_an_output_folder_that_cannot_be_created_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # (a read-only folder would not stop root)
    config = write_yaml(tmp_path / "c.yaml", tiny_raw())
    assert main(["run", str(config), "--out", str(blocker / "run"), "--quiet"]) == 2
    assert "cannot create output directory" in " ".join(capsys.readouterr().err.split())
    assert blocker.read_text() == "not a folder"


def test_names_are_escaped_in_markdown_and_on_the_console(tmp_path, capsys):
    raw = tiny_raw(name="[/]<img src=x onerror=alert(1)>|**x**")
    raw["training"]["epochs"] = 1
    raw["reports"] = ["summary", "markdown"]
    config = write_yaml(tmp_path / "c.yaml", raw)
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "[/]<img src=x onerror=alert(1)>|**x**: test" in " ".join(printed.split())
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.startswith("# \\[/\\]&lt;img src=x onerror=alert(1)&gt;\\|\\*\\*x\\*\\*\n")
    assert "<img" not in report


def test_markdown_text_escapes_what_markdown_and_html_would_interpret():
    assert markdown_text("a|b") == "a\\|b"
    assert markdown_text("<b>&") == "&lt;b&gt;&amp;"
    assert markdown_text("[link](x)") == "\\[link\\](x)"
    assert markdown_text("two\nlines") == "two lines"
    assert markdown_text("0.812 ± 0.010 (0.7, 0.9)") == "0.812 ± 0.010 (0.7, 0.9)"
