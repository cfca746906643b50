"""Kill a run with SIGKILL at chosen instants, resume it, and get exactly the outputs of an
uninterrupted run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_raw, write_yaml

from mtlkit import load_config, run
from mtlkit.cli import main

# Runs in a subprocess: trains, and kills itself with SIGKILL at the MODE's N-th event.
KILLER = r"""
import json, os, signal, sys
import mtlkit.training.fit as fit
from mtlkit import load_config, run

raw, out, mode, at = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
count = [0]

def tick():
    count[0] += 1
    if count[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)

if mode == "step":  # in the middle of an epoch, after N training steps
    step = fit.train_step
    def counted(*args):
        tick()
        return step(*args)
    fit.train_step = counted
elif mode == "state-write":  # the N-th state file is written but not yet renamed
    replace = os.replace
    def killing_replace(source, target):
        if str(target).endswith("state.safetensors"):
            tick()
        return replace(source, target)
    os.replace = killing_replace
run(load_config(raw), out_dir=out)
raise SystemExit("the run was not killed")
"""


def config(**extra):
    raw = tiny_raw(name="resume", seed=[0, 1])
    raw["training"]["epochs"] = 3
    raw["reports"] = []
    raw.update(extra)
    return raw


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "whole"
    run(load_config(config()), out_dir=out)
    return out


OUTPUTS = [
    "metrics.json",
    "predictions.csv",
    "seed_0/metrics.json",
    "seed_1/metrics.json",
    "seed_1/predictions.csv",
]


@pytest.mark.parametrize(
    "mode, at",
    [
        ("step", 3),  # seed 0, epoch 2, mid-epoch
        ("step", 10),  # seed 1, mid-run: seed 0 is finished and kept
        ("state-write", 2),  # seed 0, while the epoch-2 state is being written
        ("state-write", 6),  # seed 1's last state: killed before its outputs exist
    ],
)
def test_a_killed_run_resumes_to_identical_outputs(uninterrupted, tmp_path, mode, at):
    out = tmp_path / "killed"
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, json.dumps(config()), str(out), mode, str(at)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "metrics.json").exists()
    assert main(["resume", str(out), "--quiet"]) == 0
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert not list(out.rglob("state.safetensors"))  # finished runs drop their state
    assert not list(out.rglob(".*.tmp"))
    timing = json.loads((out / "seed_1" / "timing.json").read_text())
    assert timing["resumed_from_epoch"] >= 0


def test_the_same_config_and_seed_give_identical_files(uninterrupted, tmp_path):
    again = tmp_path / "again"
    run(load_config(config()), out_dir=again)
    for name in [*OUTPUTS, "splits.json", "seed_0/predictions.csv", "seed_1/history.json"]:
        if name.endswith("history.json"):  # epoch durations differ; everything else agrees
            strip = lambda t: [{k: v for k, v in e.items() if "second" not in k} for e in t]  # noqa: E731
            a, b = (json.loads((d / name).read_text()) for d in (again, uninterrupted))
            assert strip(a) == strip(b)
        else:
            assert (again / name).read_bytes() == (uninterrupted / name).read_bytes(), name


def test_resume_refuses_another_config_or_changed_data(uninterrupted, tmp_path, capsys):
    def error() -> str:
        return " ".join(capsys.readouterr().err.split())

    other = write_yaml(tmp_path / "other.yaml", tiny_raw(name="resume", seed=[0, 1]))
    assert main(["run", str(other), "--out", str(uninterrupted), "--resume", "--quiet"]) == 2
    assert "was started with another config" in error()
    assert main(["resume", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "not an mtlkit run directory" in error()
    assert main(["run", str(other), "--resume", "--quiet"]) == 2
    assert "--resume needs --out" in error()

    copy = tmp_path / "copy"
    shutil.copytree(uninterrupted, copy)
    record = json.loads((copy / "environment.json").read_text())
    record["data"]["fingerprint"] = "0" * 64  # as if an image had changed since
    (copy / "environment.json").write_text(json.dumps(record))
    assert main(["resume", str(copy), "--quiet"]) == 2
    assert "the data changed since" in error()


def test_a_run_directory_records_what_reproduces_it(uninterrupted):
    record = json.loads((uninterrupted / "environment.json").read_text())
    assert len(record["data"]["fingerprint"]) == 64 and record["data"]["images"] > 0
    assert record["packages"]["torch"] and record["packages"]["imagehash"]
    if record["git"] is not None:
        assert len(record["git"]["commit"]) == 40
    assert (uninterrupted / "splits.json").is_file() and (uninterrupted / "config.yaml").is_file()
