"""The parts of the fit loop on their own: best-epoch selection, the training-state capture
and restore, the device choice, and evaluation with the constraints the fit trained."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_raw
from torch import nn

from mtlkit import Constraint, Engine, OptionsModel, UsageError, hookimpl, load_config
from mtlkit.training.device import resolve_device
from mtlkit.training.fit import FitRecord, build_fit_objects
from mtlkit.training.resume import capture_state, restore_state
from mtlkit.training.selection import BestEpoch
from mtlkit.training.state import load_state, save_state


def lower_is_better(y_true, y_prob, threshold):
    return 0.0


lower_is_better.higher_is_better = False


# --- best-epoch selection -------------------------------------------------------------------


def test_the_latest_epoch_is_best_until_a_score_is_finite():
    best = BestEpoch("mean.auc", {"auc": lambda *a: 0.0})
    weights = nn.Linear(1, 1)
    assert best.offer(1, math.nan, {"model": weights})
    assert best.offer(2, math.nan, {"model": weights})
    assert best.offer(3, 0.6, {"model": weights})
    assert not best.offer(4, math.nan, {"model": weights})  # a finite score is not replaced
    assert not best.offer(5, 0.6, {"model": weights})  # by a tie either
    assert best.offer(6, 0.7, {"model": weights})
    assert (best.epoch, best.score) == (6, 0.7)


def test_scores_of_a_lower_is_better_metric_are_negated():
    best = BestEpoch("bm.loss", {"loss": lower_is_better})
    assert best.score_of({"bm": {"loss": 0.3}}) == -0.3
    assert math.isnan(best.score_of({}))  # no validation split
    best.offer(1, best.score_of({"bm": {"loss": 0.3}}), {})
    assert not best.offer(2, best.score_of({"bm": {"loss": 0.5}}), {})
    assert best.offer(3, best.score_of({"bm": {"loss": 0.1}}), {})
    assert best.signed(best.score) == pytest.approx(0.1)  # reported in the metric's direction


def test_the_kept_weights_are_a_copy_and_restore_into_another_module():
    best = BestEpoch("mean.auc", {"auc": lambda *a: 0.0})
    layer = nn.Linear(2, 1)
    kept = layer.weight.detach().clone()
    best.offer(1, 0.5, {"model": layer})
    with torch.no_grad():
        layer.weight.add_(1.0)  # training goes on after the best epoch
    other = nn.Linear(2, 1)
    best.restore({"model": other})
    assert torch.equal(other.weight, kept)
    again = BestEpoch("mean.auc", {"auc": lambda *a: 0.0})
    again.load_state_dict({**best.state_dict(), "score": None})  # None reads as NaN
    assert again.epoch == 1 and math.isnan(again.score)


# --- the device -----------------------------------------------------------------------------


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(UsageError, match="training.device"):
        resolve_device(f"cuda:{torch.cuda.device_count() + 1}")


# --- a constraint that learns ---------------------------------------------------------------


class LevelOptions(OptionsModel):
    target: float = 1.0


class LearnedLevel(Constraint):
    """Learns a level pulled from 0 towards ``target``; its violation share reports it, so
    evaluation shows which instance it asked."""

    Options = LevelOptions

    def __init__(self, options: LevelOptions, heads):
        super().__init__()
        self.target = options.target
        self.level = nn.Parameter(torch.zeros(()))

    def forward(self, probabilities):
        return (self.level - self.target) ** 2

    def violations(self, probabilities, threshold):
        return {"level": float(self.level.detach().clamp(0, 1))}


class LevelPlugin:
    name = "learned_level"

    @hookimpl
    def mtl_register_constraints(self, registry):
        registry.register("learned_level", LearnedLevel)


def level_engine(**training) -> Engine:
    raw = tiny_raw()
    raw["constraints"] = [{"type": "learned_level"}]
    raw["training"].update(training)
    return Engine(load_config(raw), plugins=[LevelPlugin()])


def test_evaluation_uses_the_constraints_the_fit_trained():
    engine = level_engine()
    engine.fit()
    trained = engine.constraints[0].level.item()
    assert trained > 0  # its parameter was optimised with the model's
    assert engine.evaluate("test").consistency["level"] == pytest.approx(trained)
    first = trained

    engine.fit()  # a second fit starts from fresh constraints, not from the trained ones
    assert engine.constraints[0].level.item() == pytest.approx(first)


def test_without_a_fit_evaluation_uses_freshly_built_constraints(tmp_path):
    trained = level_engine()
    trained.checkpoint_dir = tmp_path
    trained.fit()
    loaded = level_engine()
    loaded.load_checkpoint(tmp_path / "best.safetensors")
    assert loaded.evaluate("test").consistency["level"] == 0.0


def test_the_training_state_round_trips_every_fit_object(tmp_path):
    engine = level_engine(optimizer={"name": "sgd", "lr": 0.1})
    cfg = engine.config.training

    def fresh():
        objects = build_fit_objects(engine.build_model(), engine.components, cfg, 0, engine.device)
        record = FitRecord(BestEpoch(engine.config.evaluation.select, engine.components.metrics))
        return objects, record

    objects, record = fresh()
    with torch.no_grad():
        objects.constraints[0].level.fill_(0.25)
        next(objects.model.parameters()).mul_(2.0)
    record.best.offer(1, 0.5, objects.selected())
    objects.optimizer.zero_grad()
    objects.constraints[0](None).backward()
    objects.optimizer.step()  # momentum buffers now exist
    objects.scheduler.step()
    record.seconds, record.images = 3.0, 40
    save_state(tmp_path / "state.safetensors", capture_state(1, objects, record, "print"))

    again, again_record = fresh()
    assert again.constraints[0].level.item() == 0.0
    epochs = restore_state(load_state(tmp_path / "state.safetensors"), again, again_record)
    assert epochs == 1
    assert again.constraints[0].level.item() == objects.constraints[0].level.item()
    assert torch.equal(next(again.model.parameters()), next(objects.model.parameters()))
    assert again.scheduler.state_dict() == objects.scheduler.state_dict()
    moments = again.optimizer.state_dict()["state"]
    assert moments.keys() == objects.optimizer.state_dict()["state"].keys()
    assert again_record.best.weights["constraints"]["0.level"].item() == 0.25
    assert (again_record.best.epoch, again_record.seconds, again_record.images) == (1, 3.0, 40)
