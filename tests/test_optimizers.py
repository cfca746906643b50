"""Optimizers and learning-rate schedulers as plugins: the built-ins, their config keys, and a
third party's own registered in-process."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_raw, write_yaml
from pydantic import Field
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mtlkit import ConfigError, Engine, OptionsModel, PluginError, hookimpl, load_config
from mtlkit.cli import main
from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import resolve_components
from mtlkit.evaluation.external import evaluate_checkpoint


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


def components(host: PluginHost, **training):
    raw = tiny_raw()
    raw["training"].update(training)
    return resolve_components(load_config(raw), host)


def probe() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


# --- the built-in plugin --------------------------------------------------------------------


def test_builtins_are_registered_by_their_plugin(host):
    assert host.optimizers.names() == ["adam", "adamw", "sgd"]
    assert host.schedulers.names() == ["cosine", "none", "step"]
    owners = {e.owner for e in [*host.optimizers, *host.schedulers]}
    assert owners == {"mtlkit.optimizers"}
    assert host.owner_distribution("mtlkit.optimizers") == "mtlkit"


def test_defaults_are_the_papers_adam_and_step(host):
    raw = tiny_raw()
    del raw["training"]["optimizer"], raw["training"]["scheduler"]
    built = resolve_components(load_config(raw), host)
    optimizer = built.build_optimizer(probe())
    scheduler = built.build_scheduler(optimizer, 200)
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.param_groups[0]["lr"] == 1e-4
    assert optimizer.param_groups[0]["weight_decay"] == 0.0
    assert type(scheduler) is torch.optim.lr_scheduler.StepLR
    assert (scheduler.step_size, scheduler.gamma) == (50, 0.1)


def test_options_reach_the_torch_objects(host):
    built = components(
        host,
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.5, "weight_decay": 0.01},
        scheduler={"name": "step", "step_size": 2, "gamma": 0.5},
    )
    optimizer = built.build_optimizer(probe())
    group = optimizer.param_groups[0]
    assert type(optimizer) is torch.optim.SGD
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.5, 0.01)
    scheduler = built.build_scheduler(optimizer, 10)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [0.05, 0.05, 0.025, 0.025]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("schedule", ["step", "cosine", "none"])
def test_every_builtin_pair_steps_and_saves_json_state(host, name, schedule):
    built = components(host, optimizer={"name": name}, scheduler={"name": schedule})
    params = probe()
    optimizer = built.build_optimizer(params)
    scheduler = built.build_scheduler(optimizer, 5)
    params[0].grad = torch.ones(3)
    optimizer.step()
    scheduler.step()
    state = json.loads(json.dumps(scheduler.state_dict()))  # the training state is JSON
    again = built.build_scheduler(built.build_optimizer(probe()), 5)
    again.load_state_dict(state)
    assert again.last_epoch == scheduler.last_epoch == 1


def test_cosine_anneals_over_the_runs_epochs(host):
    built = components(host, optimizer={"name": "adam", "lr": 0.1}, scheduler="cosine")
    optimizer = built.build_optimizer(probe())
    scheduler = built.build_scheduler(optimizer, 4)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_shorthands_keep_the_same_keys_as_before():
    raw = tiny_raw()
    raw["training"]["optimizer"] = "sgd"
    raw["training"]["scheduler"] = {"step_size": 5}  # no name: the default step scheduler
    training = load_config(raw).training
    assert training.optimizer == {"name": "sgd"}
    assert training.scheduler == {"name": "step", "step_size": 5}


@pytest.mark.parametrize(
    "training, path, words",
    [
        ({"optimizer": {"name": "adamx"}}, "training.optimizer.name", "did you mean 'adam'"),
        ({"optimizer": {"name": "adam", "lr": 0}}, "training.optimizer.lr", "greater than 0"),
        ({"optimizer": {"name": 3}}, "training.optimizer.name", "expected a optimizer name"),
        ({"scheduler": {"name": "none", "gamma": 0.1}}, "training.scheduler.gamma", "unknown"),
        ({"scheduler": {"name": "step", "gamma": 2}}, "training.scheduler.gamma", "less than"),
    ],
)
def test_bad_options_name_their_yaml_path(host, training, path, words):
    with pytest.raises(ConfigError) as info:
        components(host, **training)
    problems = dict(info.value.problems)
    assert path in problems, info.value.problems
    assert words in problems[path]


def test_validate_checks_the_optimizer(tmp_path, capsys):
    raw = tiny_raw()
    raw["training"]["optimizer"] = {"name": "sgd", "momentum": -0.1}
    code = main(["validate", str(write_yaml(tmp_path / "bad.yaml", raw))])
    assert code == 2
    assert "training.optimizer.momentum" in capsys.readouterr().err


# --- a third party's optimizer and scheduler ------------------------------------------------


class HalvingOptions(OptionsModel):
    lr: float = Field(0.01, gt=0)
    every: int = Field(1, ge=1)


class ThirdParty:
    """An in-process plugin with an optimizer and a scheduler of its own."""

    name = "third_party_optim"

    def __init__(self):
        self.optimizers: list[torch.optim.Optimizer] = []

    def plain_sgd(self, options: HalvingOptions, params):
        """SGD without momentum, recorded so the test can see what the fit used."""
        optimizer = torch.optim.SGD(params, lr=options.lr)
        self.optimizers.append(optimizer)
        return optimizer

    @staticmethod
    def halving(options: HalvingOptions, optimizer, epochs):
        return torch.optim.lr_scheduler.StepLR(optimizer, options.every, 0.5)

    @hookimpl
    def mtl_register_optimizers(self, registry):
        registry.register("plain_sgd", self.plain_sgd, options=HalvingOptions)

    @hookimpl
    def mtl_register_schedulers(self, registry):
        registry.register("halving", self.halving, options=HalvingOptions)


def test_a_third_party_optimizer_and_scheduler_train_the_model():
    plugin = ThirdParty()
    raw = tiny_raw()
    raw["training"]["optimizer"] = {"name": "plain_sgd", "lr": 0.02}
    raw["training"]["scheduler"] = {"name": "halving", "every": 1}
    engine = Engine(load_config(raw), plugins=[plugin])
    before = {k: v.clone() for k, v in engine.build_model().state_dict().items()}
    result = engine.fit()

    assert engine.host.optimizers.get("plain_sgd").owner == "third_party_optim"
    used = plugin.optimizers[-1]  # the one before it checked the options at validation
    assert len(plugin.optimizers) == 2
    model_params = {id(p) for p in engine.model.parameters()}
    assert model_params <= {id(p) for g in used.param_groups for p in g["params"]}
    assert [h.lr for h in result.history] == [0.02, 0.01]  # halved after every epoch
    after = engine.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_third_party_name_is_among_the_choices():
    raw = tiny_raw()
    raw["training"]["optimizer"] = {"name": "plain_sdg"}
    with pytest.raises(ConfigError) as info:
        Engine(load_config(raw), plugins=[ThirdParty()])
    message = dict(info.value.problems)["training.optimizer.name"]
    assert "adam, adamw, plain_sgd, sgd" in message
    assert "did you mean 'plain_sgd'" in message


class Broken:
    """An optimizer factory that returns no optimizer, and a scheduler without state."""

    name = "broken_optim"

    @hookimpl
    def mtl_register_optimizers(self, registry):
        registry.register("not_an_optimizer", lambda params: object())  # no options

    @hookimpl
    def mtl_register_schedulers(self, registry):
        registry.register("stateless", lambda optimizer, epochs: object())


@pytest.mark.parametrize(
    "training, words",
    [
        ({"optimizer": "not_an_optimizer"}, "not a torch.optim.Optimizer"),
        ({"scheduler": "stateless"}, "no step, state_dict, load_state_dict"),
    ],
)
def test_a_factory_that_breaks_the_contract_is_a_plugin_error_naming_it(training, words):
    raw = tiny_raw()
    raw["training"].update(training)
    with pytest.raises(PluginError) as info:
        Engine(load_config(raw), plugins=[Broken()])
    message = str(info.value)
    assert "broken_optim" in message and words in message
    assert "mtl_register_" in message


def test_a_checkpoint_is_evaluated_whatever_optimizer_trained_it(tmp_path):
    """``mtl evaluate`` never trains: an optimizer from a plugin not installed here, or the
    options every optimizer carried before they were plugins, do not stop it."""
    engine = Engine(load_config(tiny_raw()))
    engine.checkpoint_dir = tmp_path
    engine.fit()
    tensors = load_file(tmp_path / "best.safetensors")
    with safe_open(str(tmp_path / "best.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    config = json.loads(metadata["config"])
    config["training"]["optimizer"] = {"name": "lion", "lr": 1e-4, "momentum": 0.9}
    config["training"]["scheduler"] = {"name": "cosine", "step_size": 50, "gamma": 0.1}
    save_file(tensors, tmp_path / "old.safetensors", {**metadata, "config": json.dumps(config)})
    data = write_yaml(tmp_path / "set.yaml", {"name": "b", "source": tiny_raw()["data"]["source"]})

    outcome = evaluate_checkpoint(tmp_path / "old.safetensors", data, device="cpu")
    assert set(outcome.metrics["sets"]["b"]["tasks"]) == set(engine.components.task_names)
