"""The learned and adaptive task weightings: uncertainty weighting (Kendall et al. 2018) and
dynamic weight average (Liu et al. 2019): their formulas, their training, and a resumed fit
that ends where an uninterrupted one does."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TASKS, canonical_json, tiny_raw

import mtlkit.training.fit as fit
from mtlkit import Engine, load_config
from mtlkit.plugins.weighting import (
    DWAOptions,
    DynamicWeightAverage,
    UncertaintyOptions,
    UncertaintyWeighting,
    dwa_weights,
)
from mtlkit.training.fit import build_fit_objects, train_step
from mtlkit.training.losses import Objective


def losses(**values: float) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(value) for name, value in values.items()}


# --- uncertainty ------------------------------------------------------------------------------


def test_uncertainty_weighting_is_kendalls_formula():
    weighting = UncertaintyWeighting(UncertaintyOptions(init_log_variance=0.0), ["a", "b"])
    with torch.no_grad():
        weighting.log_variance.copy_(torch.tensor([0.5, -1.0]))
    total = weighting(losses(a=2.0, b=0.3)).detach()
    expected = math.exp(-0.5) * 2.0 + 0.5 + math.exp(1.0) * 0.3 - 1.0
    assert float(total) == pytest.approx(expected, rel=1e-6)
    assert weighting.task_weights() == pytest.approx({"a": math.exp(-0.5), "b": math.exp(1.0)})


def test_uncertainty_parameters_are_optimised_with_the_model():
    engine = Engine(load_config(tiny_raw(weighting={"type": "uncertainty"})))
    objects = build_fit_objects(
        engine.build_model(), engine.components, engine.config.training, 0, engine.device
    )
    objective = Objective(
        engine.heads, engine.components.task_losses, objects.weighting, objects.constraints
    )
    optimised = {id(p) for group in objects.optimizer.param_groups for p in group["params"]}
    assert id(objects.weighting.log_variance) in optimised
    before = objects.weighting.log_variance.detach().clone()
    images = torch.randn(4, 1, 32, 32)
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]] * 2 + [[0.0] * 5] * 2)
    objects.model.train()
    train_step(objects, objective, images, targets, 1, 1)
    after = objects.weighting.log_variance.detach()
    assert not torch.equal(before, after)
    assert bool((after < before).all())  # d/ds (exp(-s) L + s) = 1 - L > 0 while L < 1


# --- dynamic weight average -------------------------------------------------------------------


def epoch(weighting: DynamicWeightAverage, *steps: dict[str, float]) -> dict[str, float]:
    """One training epoch of ``steps``; returns the weights used in it."""
    used = weighting.task_weights()
    for step in steps:
        weighting(losses(**step))
    weighting.end_epoch()
    return used


def test_dwa_weights_follow_the_epoch_mean_loss_ratios():
    dwa = DynamicWeightAverage(DWAOptions(temperature=2.0), ["a", "b", "c"])
    first = epoch(dwa, {"a": 1.0, "b": 2.0, "c": 0.5}, {"a": 3.0, "b": 2.0, "c": 0.5})
    second = epoch(dwa, {"a": 1.0, "b": 1.0, "c": 0.5}, {"a": 1.0, "b": 2.0, "c": 0.5})
    assert first == second == {"a": 1.0, "b": 1.0, "c": 1.0}  # w = 1 in epochs 1 and 2
    # means: epoch 1 (2.0, 2.0, 0.5), epoch 2 (1.0, 1.5, 0.5): r = (0.5, 0.75, 1.0)
    e = [math.exp(r / 2.0) for r in (0.5, 0.75, 1.0)]
    expected = {name: 3 * x / sum(e) for name, x in zip("abc", e, strict=True)}
    third = epoch(dwa, {"a": 0.2, "b": 1.5, "c": 0.4})
    assert third == pytest.approx(expected, rel=1e-6)
    # epoch 3 means (0.2, 1.5, 0.4) over epoch 2's: r = (0.2, 1.0, 0.8)
    e = [math.exp(r / 2.0) for r in (0.2, 1.0, 0.8)]
    assert dwa.task_weights() == pytest.approx(
        {name: 3 * x / sum(e) for name, x in zip("abc", e, strict=True)}, rel=1e-6
    )
    assert sum(dwa.task_weights().values()) == pytest.approx(3.0)


def test_dwa_weights_combine_the_losses_and_survive_a_state_dict():
    dwa = DynamicWeightAverage(DWAOptions(temperature=1.0), ["a", "b"])
    for step in ({"a": 1.0, "b": 1.0}, {"a": 0.5, "b": 0.9}):
        epoch(dwa, step)
    weights = dwa.task_weights()
    assert weights["a"] < 1.0 < weights["b"]  # b's loss fell slower: it gets more weight
    assert float(dwa(losses(a=2.0, b=3.0))) == pytest.approx(
        2.0 * weights["a"] + 3.0 * weights["b"], rel=1e-6
    )
    fresh = DynamicWeightAverage(DWAOptions(temperature=1.0), ["a", "b"])
    fresh.load_state_dict(dwa.state_dict())
    assert fresh.task_weights() == weights
    epoch(fresh, {"a": 0.25, "b": 0.9})
    epoch(dwa, {"a": 0.25, "b": 0.9})
    assert fresh.task_weights() == dwa.task_weights()


def test_dwa_without_an_earlier_loss_takes_ratio_one():
    assert dwa_weights(torch.tensor([0.5, 0.0]), torch.tensor([0.0, 0.0]), 2.0).tolist() == [
        1.0,
        1.0,
    ]


def test_a_dwa_fit_records_its_weights_from_the_epoch_losses():
    raw = tiny_raw(weighting={"type": "dwa", "temperature": 2.0})
    raw["training"]["epochs"] = 3
    history = Engine(load_config(raw)).fit().history
    assert history[0].task_weights == history[1].task_weights == dict.fromkeys(TASKS, 1.0)
    e = {t: math.exp(history[1].task_losses[t] / history[0].task_losses[t] / 2.0) for t in TASKS}
    expected = {t: len(TASKS) * e[t] / sum(e.values()) for t in TASKS}
    assert history[2].task_weights == pytest.approx(expected, rel=1e-5)


# --- resume -----------------------------------------------------------------------------------


class Killed(Exception):
    pass


@pytest.mark.parametrize("weighting", ["dwa", "uncertainty"])
def test_a_resumed_fit_ends_exactly_where_an_uninterrupted_one_does(
    weighting, tmp_path, monkeypatch
):
    raw = tiny_raw(weighting={"type": weighting})
    raw["training"].update(epochs=4, state_every=1)
    config = load_config(raw)

    whole = Engine(config)
    whole.checkpoint_dir = tmp_path / "whole"
    whole.checkpoint_dir.mkdir()
    expected = whole.fit()

    step = fit.train_step

    def killed_in_epoch_4(objects, objective, images, targets, epoch, index):
        if epoch == 4:  # after the epoch-3 state was saved
            raise Killed
        return step(objects, objective, images, targets, epoch, index)

    folder = tmp_path / "killed"
    folder.mkdir()
    first = Engine(config, data=whole.data)
    first.checkpoint_dir = folder
    monkeypatch.setattr(fit, "train_step", killed_in_epoch_4)
    with pytest.raises(Killed):
        first.fit()
    monkeypatch.setattr(fit, "train_step", step)

    resumed = Engine(config, data=whole.data)
    resumed.checkpoint_dir = folder
    result = resumed.fit(resume=True)
    assert result.resumed_from == 3
    if weighting == "dwa":
        assert expected.history[3].task_weights != dict.fromkeys(TASKS, 1.0)
    for ours, theirs in zip(result.history, expected.history, strict=True):
        assert ours.task_losses == theirs.task_losses
        assert ours.task_weights == theirs.task_weights
        assert canonical_json(ours.val_metrics) == canonical_json(theirs.val_metrics)
    for name, tensor in whole.weighting.state_dict().items():
        assert torch.equal(resumed.weighting.state_dict()[name], tensor), name
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
