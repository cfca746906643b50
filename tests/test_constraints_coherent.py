"""The coherent constraint (C-HMCNN's max constraint module with MCLoss, or the conditional
form): outputs that never put a child above its parent, its task losses against hand
computations, how the objective uses them, and a tiny run's files."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import TASKS, tiny_raw
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlkit import (
    ConfigError,
    Engine,
    MulticlassHead,
    MulticlassOptions,
    TaskHead,
    load_config,
    run,
)
from mtlkit.inference.outputs import adjusted_probabilities
from mtlkit.plugins.constraints import (
    Coherent,
    CoherentOptions,
    HierarchicalHinge,
    HierarchicalHingeOptions,
)
from mtlkit.plugins.task_losses import BCEOptions, bce_loss
from mtlkit.plugins.weighting import EqualOptions, EqualWeighting
from mtlkit.training.losses import Objective, masked_task_loss

CHAIN = [("bm", "alnm"), ("alnm", "alnm_ge2"), ("alnm_ge2", "alnm_ge3"), ("alnm_ge3", "alnm_ge4")]
NAN = math.nan


def heads(*names: str) -> dict[str, TaskHead]:
    return {name: TaskHead(name) for name in names}


def coherent(pairs, form="max", names=None) -> Coherent:
    names = names or list(dict.fromkeys(t for pair in pairs for t in pair))
    return Coherent(CoherentOptions(pairs=pairs, form=form), heads(*names))


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def logits_of(probabilities: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    """Logits (N, 1), as a binary head outputs them, whose sigmoids are ``probabilities``."""
    return {
        task: torch.tensor([[logit(p)] for p in values], dtype=torch.float64).requires_grad_()
        for task, values in probabilities.items()
    }


def targets_of(values: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    return {task: torch.tensor(v, dtype=torch.float64) for task, v in values.items()}


# --- consistent by construction -----------------------------------------------------------


@st.composite
def hierarchies(draw):
    """A random DAG (or chain) over 2-6 tasks, and random logits for a batch, extreme values
    included."""
    count = draw(st.integers(2, 6))
    names = [f"t{i}" for i in range(count)]
    order = draw(st.permutations(names))  # edges go forward in this order: acyclic
    if draw(st.booleans()):
        pairs = list(zip(order, order[1:], strict=False))
    else:
        possible = [(order[i], order[j]) for i in range(count) for j in range(i + 1, count)]
        pairs = draw(st.lists(st.sampled_from(possible), min_size=1, unique=True))
    batch = draw(st.integers(1, 6))
    value = st.one_of(
        st.floats(-1e4, 1e4, allow_nan=False),
        st.sampled_from([0.0, -0.0, 1e30, -1e30, 88.8, -88.8, 17.0, -104.0, math.inf, -math.inf]),
    )
    logits = {
        name: torch.tensor(draw(st.lists(value, min_size=batch, max_size=batch))) for name in names
    }
    return names, pairs, logits


@settings(max_examples=300, deadline=None)
@given(hierarchies(), st.sampled_from(["max", "conditional"]))
def test_no_child_is_ever_above_its_parent(hierarchy, form):
    names, pairs, logits = hierarchy
    constraint = coherent(pairs, form, names)
    raw = {name: torch.sigmoid(z) for name, z in logits.items()}
    before = {name: p.clone() for name, p in raw.items()}
    adjusted = adjusted_probabilities([constraint], raw)
    assert set(adjusted) == set(names)
    for parent, child in pairs:
        assert bool((adjusted[child] <= adjusted[parent]).all()), (parent, child)
    for name, p in adjusted.items():
        assert bool(((p >= 0) & (p <= 1)).all())
        assert p.shape == raw[name].shape
    assert all(torch.equal(before[n], raw[n]) for n in names)  # the input is left alone
    # never inconsistent at any threshold: child > t and parent <= t cannot both hold
    for threshold in (0.0, 0.5, float(adjusted[names[0]].min()), 1.0):
        for parent, child in pairs:
            broken = (adjusted[child] > threshold) & (adjusted[parent] <= threshold)
            assert not bool(broken.any())


@settings(max_examples=150, deadline=None)
@given(hierarchies(), st.sampled_from(["max", "conditional"]), st.data())
def test_task_losses_are_finite_with_finite_gradients(hierarchy, form, data):
    names, pairs, logits = hierarchy
    constraint = coherent(pairs, form, names)
    finite = {
        n: z.clamp(-1e4, 1e4).reshape(-1, 1).clone().requires_grad_() for n, z in logits.items()
    }
    label = st.sampled_from([0.0, 1.0, NAN])
    batch = len(next(iter(logits.values())))
    targets = {
        n: torch.tensor(data.draw(st.lists(label, min_size=batch, max_size=batch))) for n in names
    }
    losses = constraint.task_losses(finite, targets)
    assert set(losses) == set(constraint.governed)
    for task, loss in losses.items():
        assert loss.ndim == 0 and bool(torch.isfinite(loss)) and float(loss.detach()) >= 0, task
        if bool(torch.isnan(targets[task]).all()):
            assert float(loss.detach()) == 0.0
    total = sum(losses.values(), torch.zeros(()))
    if total.requires_grad:
        for z in torch.autograd.grad(total, list(finite.values()), allow_unused=True):
            assert z is None or bool(torch.isfinite(z).all())


def test_the_max_form_takes_the_max_over_every_descendant():
    constraint = coherent([("bm", "alnm"), ("alnm", "alnm_ge2"), ("bm", "alnm_ge3")])
    raw = {
        "bm": torch.tensor([0.2, 0.9]),
        "alnm": torch.tensor([0.3, 0.1]),
        "alnm_ge2": torch.tensor([0.6, 0.05]),
        "alnm_ge3": torch.tensor([0.1, 0.95]),
    }
    adjusted = adjusted_probabilities([constraint], raw)
    assert adjusted["bm"].tolist() == pytest.approx([0.6, 0.95])
    assert adjusted["alnm"].tolist() == pytest.approx([0.6, 0.1])
    assert torch.equal(adjusted["alnm_ge2"], raw["alnm_ge2"])  # leaves keep theirs
    assert torch.equal(adjusted["alnm_ge3"], raw["alnm_ge3"])
    assert constraint.governed == ["bm", "alnm"]


def test_the_conditional_form_multiplies_down_the_chain_and_takes_the_least_parent():
    chain = coherent([("bm", "alnm"), ("alnm", "alnm_ge2")], form="conditional")
    raw = {"bm": torch.tensor([0.5]), "alnm": torch.tensor([0.8]), "alnm_ge2": torch.tensor([0.5])}
    adjusted = adjusted_probabilities([chain], raw)
    assert [float(adjusted[t]) for t in ("bm", "alnm", "alnm_ge2")] == pytest.approx(
        [0.5, 0.4, 0.2]
    )
    assert chain.governed == ["alnm", "alnm_ge2"]
    dag = coherent([("bm", "alnm_ge2"), ("alnm", "alnm_ge2")], form="conditional")
    both = {"bm": torch.tensor([0.3]), "alnm": torch.tensor([0.6]), "alnm_ge2": torch.tensor([0.5])}
    assert float(adjusted_probabilities([dag], both)["alnm_ge2"]) == pytest.approx(0.15)


# --- the task losses, by hand ------------------------------------------------------------------


def test_mcloss_matches_its_definition_on_a_small_case():
    constraint = coherent([("bm", "alnm"), ("alnm", "alnm_ge2")])
    h = {"bm": [0.6, 0.3, 0.4, 0.2], "alnm": [0.8, 0.5, 0.7, 0.1], "alnm_ge2": [0.3, 0.9, 0.2, 0.4]}
    y = {
        "bm": [1.0, 1.0, NAN, 0.0],
        "alnm": [0.0, 1.0, 1.0, 0.0],
        "alnm_ge2": [0.0, NAN, 1.0, 0.0],
    }
    losses = constraint.task_losses(logits_of(h), targets_of(y))
    # bm: sample 1 positive, only bm itself is a known positive: log(0.6); sample 2 positive,
    # alnm too (ge2 unknown counts as not positive): log(max(0.3, 0.5)); sample 3 unknown;
    # sample 4 negative: log(1 - max(0.2, 0.1, 0.4)).
    bm = -(math.log(0.6) + math.log(0.5) + math.log(1 - 0.4)) / 3
    # alnm: sample 1 negative: log(1 - max(0.8, 0.3)); 2 positive: log(0.5); 3 positive, ge2
    # positive: log(max(0.7, 0.2)); 4 negative: log(1 - max(0.1, 0.4)).
    alnm = -(math.log(0.2) + math.log(0.5) + math.log(0.7) + math.log(0.6)) / 4
    assert set(losses) == {"bm", "alnm"}  # the leaf keeps its configured loss
    assert losses["bm"].item() == pytest.approx(bm, rel=1e-9)
    assert losses["alnm"].item() == pytest.approx(alnm, rel=1e-9)


def test_mcloss_sends_the_gradient_to_the_maximising_task_only():
    constraint = coherent([("bm", "alnm")])
    logits = logits_of({"bm": [0.2], "alnm": [0.7]})
    loss = constraint.task_losses(logits, targets_of({"bm": [0.0], "alnm": [0.0]}))["bm"]
    loss.backward()  # bm negative: -log(1 - max(h)) pushes the larger output, alnm's, down
    assert float(logits["bm"].grad) == 0.0
    assert float(logits["alnm"].grad) == pytest.approx(0.7)  # d/dz -log(1 - sigmoid(z))


def test_the_conditional_form_is_bce_on_the_product():
    constraint = coherent([("bm", "alnm"), ("alnm", "alnm_ge2")], form="conditional")
    h = {"bm": [0.5, 0.9, 0.4], "alnm": [0.8, 0.5, 0.6], "alnm_ge2": [0.5, 0.1, 0.25]}
    y = {"bm": [1.0, 1.0, 0.0], "alnm": [1.0, 0.0, NAN], "alnm_ge2": [0.0, 0.0, 1.0]}
    losses = constraint.task_losses(logits_of(h), targets_of(y))
    alnm = -(math.log(0.5 * 0.8) + math.log(1 - 0.9 * 0.5)) / 2
    ge2 = -(math.log(1 - 0.4 * 0.5) + math.log(1 - 0.45 * 0.1) + math.log(0.24 * 0.25)) / 3
    assert set(losses) == {"alnm", "alnm_ge2"}  # bm, without a parent, keeps its own
    assert losses["alnm"].item() == pytest.approx(alnm, rel=1e-9)
    assert losses["alnm_ge2"].item() == pytest.approx(ge2, rel=1e-9)


def test_losses_stay_finite_for_saturated_outputs():
    for form in ("max", "conditional"):
        constraint = coherent([("bm", "alnm")], form=form)
        z = torch.tensor([[200.0], [-200.0]], requires_grad=True)
        losses = constraint.task_losses(
            {"bm": z, "alnm": -z},
            {"bm": torch.tensor([0.0, 1.0]), "alnm": torch.tensor([1.0, 0.0])},
        )
        total = sum(losses.values())
        assert bool(torch.isfinite(total)) and total.item() > 10
        (grad,) = torch.autograd.grad(total, z)
        assert bool(torch.isfinite(grad).all())


def test_coherent_refuses_what_the_hinge_refuses():
    multiclass = MulticlassHead(MulticlassOptions(name="size", label="s", classes=["a", "b"]))
    with pytest.raises(ValueError, match="not binary"):
        Coherent(CoherentOptions(pairs=[("bm", "size")]), {**heads("bm"), "size": multiclass})
    with pytest.raises(ValueError, match="cycle"):
        coherent([("bm", "alnm"), ("alnm", "bm")])
    with pytest.raises(ValueError, match="no head defines"):
        Coherent(CoherentOptions(pairs=[("bm", "alnm")]), heads("bm"))
    with pytest.raises(ValueError, match="itself"):
        coherent([("bm", "bm")])


# --- the objective ----------------------------------------------------------------------------


def objective(constraints, names=("bm", "alnm", "alnm_ge2")) -> Objective:
    fns = {n: bce_loss(BCEOptions(pos_weight=3.0)) for n in names}  # unlike MCLoss
    return Objective(
        [TaskHead(n) for n in names], fns, EqualWeighting(EqualOptions(), list(names)), constraints
    )


OUTPUTS = {
    "bm": torch.tensor([[0.3], [-1.0], [2.0]]),
    "alnm": torch.tensor([[1.2], [0.4], [-0.5]]),
    "alnm_ge2": torch.tensor([[-0.7], [1.5], [0.1]]),
}
TARGETS = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, NAN], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "form, replaced", [("max", {"bm", "alnm"}), ("conditional", {"alnm", "alnm_ge2"})]
)
def test_the_objective_replaces_the_losses_of_the_governed_tasks(form, replaced):
    constraint = coherent([("bm", "alnm"), ("alnm", "alnm_ge2")], form=form)
    losses, constraint_loss, total = objective([constraint])(OUTPUTS, TARGETS)
    expected = constraint.task_losses(
        OUTPUTS, {n: TARGETS[:, i] for i, n in enumerate(["bm", "alnm", "alnm_ge2"])}
    )
    configured = bce_loss(BCEOptions(pos_weight=3.0))
    assert list(losses) == ["bm", "alnm", "alnm_ge2"]  # the heads' order
    for column, task in enumerate(losses):
        if task in replaced:
            assert torch.equal(losses[task], expected[task])
        else:
            own = masked_task_loss(configured, OUTPUTS[task], TARGETS[:, column])
            assert torch.equal(losses[task], own)
    assert float(constraint_loss) == 0.0
    assert float(total) == pytest.approx(sum(float(v) for v in losses.values()))


def test_two_constraints_may_not_govern_one_task():
    hinge = HierarchicalHinge(HierarchicalHingeOptions(pairs=[("bm", "alnm")]), heads("bm", "alnm"))
    first = coherent([("bm", "alnm")])
    objective([hinge, first])(OUTPUTS, TARGETS)  # a hinge governs no task loss
    with pytest.raises(ConfigError, match=r"constraints\[2\].*'bm'.*constraints\[1\]"):
        objective([hinge, first, coherent([("bm", "alnm_ge2")])])(OUTPUTS, TARGETS)


# --- a tiny run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coherent_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("coherent") / "run"
    raw = tiny_raw(constraints=[{"type": "coherent", "pairs": [list(p) for p in CHAIN]}])
    raw["reports"] = []
    run(load_config(raw), out_dir=out)
    return out


def test_a_coherent_run_never_predicts_a_child_above_its_parent(coherent_run):
    with (coherent_run / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    for row in rows:
        for parent, child in CHAIN:
            assert float(row[f"{child}_prob"]) <= float(row[f"{parent}_prob"]), row["image_id"]


def test_a_coherent_run_reports_raw_and_constrained_aucs(coherent_run):
    metrics = json.loads((coherent_run / "metrics.json").read_text())
    for split in ("val", "test"):
        tasks = metrics["sets"][split]["tasks"]
        assert set(tasks) == set(TASKS)
        for task in TASKS:
            assert "raw_auc" in tasks[task] and "auc" in tasks[task]
        # a leaf's output is not adjusted in the max form: both AUCs agree
        assert tasks["alnm_ge4"]["raw_auc"] == tasks["alnm_ge4"]["auc"]
    history = json.loads((coherent_run / "history.json").read_text())
    assert all(epoch["constraint_loss"] == 0.0 for epoch in history)
    assert history[0]["task_weights"] == dict.fromkeys(TASKS, 1.0)


def test_runs_without_an_adjusting_constraint_report_no_raw_auc():
    engine = Engine(load_config(tiny_raw()))  # the hinge chain of configs/quick.yaml
    engine.fit()
    assert all("raw_auc" not in m for m in engine.evaluate("test").tasks.values())


def test_predict_and_evaluate_adjust_like_the_constraint():
    raw = tiny_raw(
        constraints=[{"type": "coherent", "pairs": [list(p) for p in CHAIN], "form": "conditional"}]
    )
    raw["training"]["epochs"] = 1
    engine = Engine(load_config(raw))
    engine.fit()
    indices = engine.data.indices("test")
    rois = engine.data.cache[torch.from_numpy(indices)]
    adjusted, unadjusted = engine._infer(rois)
    expected = engine.constraints[0].adjust({k: torch.from_numpy(v) for k, v in unadjusted.items()})
    for task in ("alnm", "alnm_ge2", "alnm_ge4"):
        assert np.allclose(adjusted[task], expected[task].numpy(), rtol=0, atol=1e-7)
    assert np.array_equal(adjusted["bm"], unadjusted["bm"])  # no parent: raw
    images = [engine.data.samples[i].image() for i in indices[:3]]
    predicted = engine.predict(images)
    for parent, child in CHAIN:
        assert bool((predicted[child] <= predicted[parent]).all())
    result = engine.evaluate("test")
    assert result.tasks["bm"]["raw_auc"] == result.tasks["bm"]["auc"]
    for task in TASKS:
        assert np.array_equal(result.predictions.probabilities[task], adjusted[task])
