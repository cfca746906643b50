"""training.ema: the weight average is updated by the formula, and it is what a run validates,
selects, saves and resumes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_raw
from safetensors.torch import load_file

from mtlkit import Engine, load_config, run
from mtlkit.cli import main
from mtlkit.training.averaging import WeightAverage


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))


def test_the_average_follows_the_formula_with_its_warm_up():
    net = _net()
    average = WeightAverage(net, decay=0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(30):
        with torch.no_grad():  # an optimiser step changes the live weights in place
            net[0].weight.add_(0.1 * (step + 1))
            net[1].running_mean.sub_(0.05)
            net[1].num_batches_tracked.add_(1)
        decay = min(0.9, (1 + step) / (10 + step))
        assert average.current_decay() == pytest.approx(decay)
        average.update()
        for name, value in net.state_dict().items():
            if value.dtype.is_floating_point:
                expected[name] = decay * expected[name] + (1 - decay) * value
            else:
                expected[name] = value.clone()
    assert average.updates == 30
    for name, value in average.model.state_dict().items():
        torch.testing.assert_close(value, expected[name])
    assert not torch.equal(average.model[0].weight, net[0].weight)
    assert not any(p.requires_grad for p in average.model.parameters())


def test_the_average_survives_a_save_and_load():
    net = _net()
    first = WeightAverage(net, decay=0.99)
    for _ in range(5):
        with torch.no_grad():
            net[0].bias.add_(1.0)
        first.update()
    second = WeightAverage(_net(), decay=0.99)
    second.load_state_dict(first.state_dict())
    assert second.updates == 5
    for name, value in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], value)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_net(), decay)


def test_a_run_with_ema_validates_selects_and_saves_the_average(tmp_path):
    raw = tiny_raw()
    raw["training"]["epochs"] = 3
    raw["training"]["ema"] = 0.9
    engine = Engine(load_config(raw))
    engine.checkpoint_dir = tmp_path
    result = engine.fit()
    best = load_file(str(tmp_path / "best.safetensors"))
    current = engine.model.state_dict()
    assert all(torch.equal(current[k], best[k]) for k in best)
    # The restored model scores on the validation split what the best epoch recorded.
    recorded = result.history[result.best_epoch - 1].val_metrics
    measured = engine.evaluate("val").tasks
    for task, metrics in recorded.items():  # the epoch's: without intervals and calibration
        same_keys = {name: measured[task][name] for name in metrics}
        assert same_keys == pytest.approx(metrics, nan_ok=True), task

    plain = Engine(load_config(tiny_raw(training={**raw["training"], "ema": 0.0})))
    plain.fit()
    assert any(not torch.equal(plain.model.state_dict()[k], best[k]) for k in best)


KILL_AFTER_STEPS = r"""
import json, os, signal, sys
import mtlkit.training.fit as fit
from mtlkit import load_config, run

raw, out = json.loads(sys.argv[1]), sys.argv[2]
step, count = fit.train_step, [0]
def counted(*args):
    count[0] += 1
    if count[0] == 4:  # epoch 2, mid-epoch: the state of epoch 1 holds an average
        os.kill(os.getpid(), signal.SIGKILL)
    return step(*args)
fit.train_step = counted
run(load_config(raw), out_dir=out)
"""


def test_a_killed_run_with_ema_resumes_to_identical_outputs(tmp_path):
    raw = tiny_raw(name="ema-resume", reports=[])
    raw["training"]["epochs"] = 3
    raw["training"]["ema"] = 0.8
    whole = tmp_path / "whole"
    run(load_config(raw), out_dir=whole)
    killed = tmp_path / "killed"
    process = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_STEPS, json.dumps(raw), str(killed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == -9, process.stderr[-2000:]
    assert main(["resume", str(killed), "--quiet"]) == 0
    for name in ("metrics.json", "predictions.csv"):
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
