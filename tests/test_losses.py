"""Masked task losses, the hierarchical hinge constraint, task weighting and the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from mtlkit import MulticlassHead, MulticlassOptions
from mtlkit.components.interfaces import TaskHead
from mtlkit.evaluation.metrics import selection_score, task_metrics
from mtlkit.plugins import metrics as M
from mtlkit.plugins.constraints import HierarchicalHinge, HierarchicalHingeOptions
from mtlkit.plugins.task_losses import BCEOptions, CrossEntropyOptions, bce_loss, cross_entropy_loss
from mtlkit.plugins.weighting import EqualOptions, EqualWeighting
from mtlkit.training.losses import masked_task_loss

NAN = float("nan")


def bce_by_hand(logit: float, target: float, pos_weight: float = 1.0) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(pos_weight * target * math.log(p) + (1 - target) * math.log(1 - p))


# --- masked task loss -----------------------------------------------------------------------


def test_all_targets_unknown_gives_exactly_zero_and_a_zero_gradient():
    logits = torch.tensor([[0.3], [-2.0], [5.0]], requires_grad=True)
    targets = torch.full((3,), NAN)
    loss = masked_task_loss(bce_loss(BCEOptions()), logits, targets)
    assert loss.item() == 0.0
    assert torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_partially_labelled_batch_averages_over_labelled_samples_only():
    values = [0.5, -1.0, 2.0, 0.3]
    logits = torch.tensor(values).reshape(4, 1).requires_grad_()
    targets = torch.tensor([1.0, NAN, 0.0, NAN])
    loss = masked_task_loss(bce_loss(BCEOptions()), logits, targets)
    expected = (bce_by_hand(0.5, 1) + bce_by_hand(2.0, 0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    grad = logits.grad.reshape(-1)
    assert grad[1] == 0 and grad[3] == 0
    # d/dx mean(bce) = (sigmoid(x) - y) / n_labelled
    assert grad[0].item() == pytest.approx((1 / (1 + math.exp(-0.5)) - 1) / 2, rel=1e-5)
    assert grad[2].item() == pytest.approx((1 / (1 + math.exp(-2.0))) / 2, rel=1e-5)


def test_fully_labelled_batch_is_the_plain_mean():
    logits = torch.tensor([[1.0], [-1.0], [0.0]])
    targets = torch.tensor([1.0, 1.0, 0.0])
    loss = masked_task_loss(bce_loss(BCEOptions()), logits, targets)
    expected = np.mean([bce_by_hand(1, 1), bce_by_hand(-1, 1), bce_by_hand(0, 0)])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_pos_weight_scales_positive_samples():
    logits = torch.tensor([[0.2], [0.2]])
    targets = torch.tensor([1.0, 0.0])
    loss = masked_task_loss(bce_loss(BCEOptions(pos_weight=3.0)), logits, targets)
    expected = (bce_by_hand(0.2, 1, 3.0) + bce_by_hand(0.2, 0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_pulls_the_targets_towards_one_half_and_keeps_the_mask():
    logits = torch.tensor([[1.5], [-0.5], [0.7]], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, NAN])
    loss = masked_task_loss(bce_loss(BCEOptions(label_smoothing=0.2)), logits, targets)
    expected = (bce_by_hand(1.5, 0.9) + bce_by_hand(-0.5, 0.1)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad[2].item() == 0.0  # the unknown target still contributes nothing
    # the loss is smallest at the smoothed target's logit, not at +infinity
    at_target = torch.tensor([[math.log(0.9 / 0.1)]], requires_grad=True)
    smoothed = masked_task_loss(bce_loss(BCEOptions(label_smoothing=0.2)), at_target, targets[:1])
    smoothed.backward()
    assert abs(at_target.grad.item()) < 1e-6


def test_masked_cross_entropy_for_multiclass():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]], requires_grad=True)
    targets = torch.tensor([0.0, NAN, 1.0])
    loss = masked_task_loss(cross_entropy_loss(CrossEntropyOptions()), logits, targets)
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce2 = -math.log(1 / (2 + math.exp(3)))
    assert loss.item() == pytest.approx((ce0 + ce2) / 2, rel=1e-6)
    loss.backward()
    assert torch.equal(logits.grad[1], torch.zeros(3))


def test_masked_cross_entropy_all_unknown_is_zero():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = masked_task_loss(
        cross_entropy_loss(CrossEntropyOptions()), logits, torch.full((4,), NAN)
    )
    assert loss.item() == 0.0
    loss.backward()
    assert not torch.isnan(logits.grad).any()


# --- hierarchical hinge ---------------------------------------------------------------------


def binary_heads(*names: str) -> dict[str, TaskHead]:
    return {name: TaskHead(name) for name in names}


def hinge(pairs, margin=0.1, weight=0.05, heads=None) -> HierarchicalHinge:
    heads = heads or binary_heads(*{t for pair in pairs for t in pair})
    return HierarchicalHinge(
        HierarchicalHingeOptions(pairs=pairs, margin=margin, weight=weight), heads
    )


P = {
    "bm": torch.tensor([0.9, 0.2, 0.5]),
    "alnm": torch.tensor([0.3, 0.6, 0.65]),
    "alnm_ge2": torch.tensor([0.6, 0.9, 0.2]),
}


def test_hinge_value_matches_the_paper_formula():
    value = hinge([("bm", "alnm")])(P)
    gaps = [0.3 - 0.9 - 0.1, 0.6 - 0.2 - 0.1, 0.65 - 0.5 - 0.1]
    expected = 0.05 * np.mean([max(0.0, g) for g in gaps])
    assert expected == pytest.approx(0.05 * 0.35 / 3)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_hinge_chain_sums_its_pairs():
    chain = hinge([("bm", "alnm"), ("alnm", "alnm_ge2")])(P)
    first = np.mean([0.0, 0.3, 0.05])
    second = np.mean([0.6 - 0.3 - 0.1, 0.9 - 0.6 - 0.1, 0.0])
    assert chain.item() == pytest.approx(0.05 * (first + second), rel=1e-5)
    assert chain.item() == pytest.approx(
        hinge([("bm", "alnm")])(P).item() + hinge([("alnm", "alnm_ge2")])(P).item(), rel=1e-6
    )


def test_hinge_is_zero_when_consistent_and_gradient_only_where_violated():
    consistent = {"bm": torch.tensor([0.9, 0.5]), "alnm": torch.tensor([0.2, 0.55])}
    assert hinge([("bm", "alnm")])(consistent).item() == 0.0
    child = torch.tensor([0.3, 0.6, 0.65], requires_grad=True)
    loss = hinge([("bm", "alnm")], margin=0.1, weight=1.0)({"bm": P["bm"], "alnm": child})
    loss.backward()
    assert child.grad.tolist() == pytest.approx([0.0, 1 / 3, 1 / 3])


def test_hinge_weight_and_margin_scale_the_loss():
    base = hinge([("bm", "alnm")], margin=0.0, weight=1.0)(P).item()
    assert base == pytest.approx(np.mean([0.0, 0.4, 0.15]), rel=1e-5)
    assert hinge([("bm", "alnm")], margin=0.0, weight=2.0)(P).item() == pytest.approx(2 * base)


def test_hinge_relations_are_its_pairs():
    assert hinge([("bm", "alnm"), ("alnm", "alnm_ge2")]).relations == (
        ("bm", "alnm"),
        ("alnm", "alnm_ge2"),
    )


def test_hinge_refuses_multiclass_tasks():
    heads = binary_heads("bm")
    heads["size"] = MulticlassHead(MulticlassOptions(name="size", label="s", classes=["a", "b"]))
    with pytest.raises(ValueError, match="not binary"):
        hinge([("bm", "size")], heads=heads)


# --- weighting ------------------------------------------------------------------------------


def test_equal_weighting_sums_with_optional_weights():
    losses = {"a": torch.tensor(1.5), "b": torch.tensor(0.5)}
    assert EqualWeighting(EqualOptions(), ["a", "b"])(losses).item() == pytest.approx(2.0)
    weighted = EqualWeighting(EqualOptions(weights={"b": 4.0}), ["a", "b"])(losses)
    assert weighted.item() == pytest.approx(1.5 + 2.0)
    with pytest.raises(ValueError, match="c"):
        EqualWeighting(EqualOptions(weights={"c": 1.0}), ["a", "b"])


# --- metrics --------------------------------------------------------------------------------

Y = np.array([1, 1, 1, 0, 0, 0, 0, 1, 0, 1])
PROB = np.array([0.9, 0.7, 0.3, 0.2, 0.6, 0.1, 0.4, 0.8, 0.55, 0.45])


@pytest.mark.parametrize("threshold", [0.5, 0.35])
def test_binary_metrics_match_sklearn(threshold):
    pred = (PROB > threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(Y, pred).ravel()
    assert M.accuracy(Y, PROB, threshold) == pytest.approx(skm.accuracy_score(Y, pred))
    assert M.sensitivity(Y, PROB, threshold) == pytest.approx(skm.recall_score(Y, pred))
    assert M.specificity(Y, PROB, threshold) == pytest.approx(tn / (tn + fp))
    assert M.precision(Y, PROB, threshold) == pytest.approx(skm.precision_score(Y, pred))
    assert M.f1(Y, PROB, threshold) == pytest.approx(skm.f1_score(Y, pred))
    assert M.auc(Y, PROB, threshold) == pytest.approx(skm.roc_auc_score(Y, PROB))


def test_binary_metrics_on_a_known_example():
    # threshold 0.5: predicted positive 0.9 0.7 0.6 0.8 0.55 -> tp 3, fp 2, tn 3, fn 2
    assert M.accuracy(Y, PROB, 0.5) == pytest.approx(0.6)
    assert M.sensitivity(Y, PROB, 0.5) == pytest.approx(0.6)
    assert M.specificity(Y, PROB, 0.5) == pytest.approx(0.6)
    assert M.precision(Y, PROB, 0.5) == pytest.approx(0.6)
    assert M.f1(Y, PROB, 0.5) == pytest.approx(0.6)


def test_undefined_metrics_are_nan():
    only_negatives = np.array([0, 0, 0])
    low = np.array([0.1, 0.2, 0.3])
    assert math.isnan(M.sensitivity(only_negatives, low, 0.5))  # no positives
    assert math.isnan(M.precision(only_negatives, low, 0.5))  # nothing predicted positive
    assert math.isnan(M.auc(only_negatives, low, 0.5))  # one class
    assert math.isnan(M.specificity(np.array([1, 1]), np.array([0.2, 0.9]), 0.5))
    assert M.specificity(only_negatives, low, 0.5) == 1.0
    assert math.isnan(M.f1(only_negatives, low, 0.5))  # 2TP + FP + FN = 0


Y3 = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0, 2])
PROB3 = np.array([
    [0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.1, 0.5, 0.4], [0.3, 0.4, 0.3],
    [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1], [0.4, 0.4, 0.2], [0.2, 0.3, 0.5],
])  # fmt: skip


def test_multiclass_metrics_are_macro_averages():
    pred = PROB3.argmax(axis=1)
    assert M.accuracy(Y3, PROB3, 0.5) == pytest.approx(skm.accuracy_score(Y3, pred))
    assert M.sensitivity(Y3, PROB3, 0.5) == pytest.approx(
        skm.recall_score(Y3, pred, average="macro")
    )
    assert M.precision(Y3, PROB3, 0.5) == pytest.approx(
        skm.precision_score(Y3, pred, average="macro")
    )
    assert M.f1(Y3, PROB3, 0.5) == pytest.approx(skm.f1_score(Y3, pred, average="macro"))
    assert M.auc(Y3, PROB3, 0.5) == pytest.approx(
        skm.roc_auc_score(Y3, PROB3, multi_class="ovr", average="macro")
    )
    cm = skm.confusion_matrix(Y3, pred)
    spec = [
        (cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]) / (cm.sum() - cm[c].sum())
        for c in range(3)
    ]
    assert M.specificity(Y3, PROB3, 0.5) == pytest.approx(np.mean(spec))


def test_multiclass_auc_skips_absent_classes():
    y = np.array([0, 1, 0, 1])  # class 2 never occurs
    prob = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    expected = np.mean([skm.roc_auc_score(y == c, prob[:, c]) for c in (0, 1)])
    assert M.auc(y, prob, 0.5) == pytest.approx(expected)


def test_task_metrics_ignores_unknown_targets_and_adds_reference_auc():
    metrics = {"acc": M.accuracy, "auc": M.auc}
    targets = np.array([1, 0, NAN, 1, 0, NAN])
    probs = np.array([0.8, 0.3, 0.99, 0.4, 0.6, 0.01])
    reference = np.array([0.9, 0.1, 0.5, 0.7, 0.2, 0.5])
    row = task_metrics(TaskHead("t"), targets, probs, metrics, 0.5, reference)
    assert row["n"] == 4 and row["n_positive"] == 2
    assert row["acc"] == pytest.approx(0.5)
    assert row["auc"] == pytest.approx(skm.roc_auc_score([1, 0, 1, 0], [0.8, 0.3, 0.4, 0.6]))
    assert row["reference_auc"] == pytest.approx(1.0)
    empty = task_metrics(TaskHead("t"), np.array([NAN]), np.array([0.5]), metrics, 0.5)
    assert empty["n"] == 0 and math.isnan(empty["acc"]) and math.isnan(empty["auc"])


def test_selection_score_mean_ignores_nan():
    metrics = {"a": {"auc": 0.8}, "b": {"auc": NAN}, "c": {"auc": 0.6}}
    assert selection_score(metrics, "mean.auc") == pytest.approx(0.7)
    assert selection_score(metrics, "a.auc") == pytest.approx(0.8)
    assert math.isnan(selection_score({"b": {"auc": NAN}}, "mean.auc"))
