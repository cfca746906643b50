"""The paper's metrics: ACC, SE, SP, precision and F1 at a threshold, and ROC AUC.

Each takes ``(y_true, y_prob, threshold)`` over a whole split. Binary tasks pass 1-D
probabilities; multiclass tasks pass (N, classes) and get macro averages (one-vs-rest).
An undefined value (no positives, no predicted positives, one class only) is NaN.
"""

from __future__ import annotations

import math

import numpy as np

from mtlkit import binary_auc, hookimpl, positive_at


def _counts(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> list[tuple[int, ...]]:
    """(tp, fp, tn, fn) for a binary task, or for each class one-vs-rest."""
    if y_prob.ndim == 1:
        pairs = [(y_true == 1, positive_at(y_prob, threshold))]
    else:
        predicted = y_prob.argmax(axis=1)
        pairs = [(y_true == c, predicted == c) for c in range(y_prob.shape[1])]
    out = []
    for truth, pred in pairs:
        tp = int(np.sum(truth & pred))
        fp = int(np.sum(~truth & pred))
        tn = int(np.sum(~truth & ~pred))
        fn = int(np.sum(truth & ~pred))
        out.append((tp, fp, tn, fn))
    return out


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _macro(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def accuracy(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> float:
    """ACC: share of correct predictions."""
    if y_prob.ndim == 1:
        return (
            float(np.mean(positive_at(y_prob, threshold) == (y_true == 1)))
            if len(y_true)
            else math.nan
        )
    return float(np.mean(y_prob.argmax(axis=1) == y_true)) if len(y_true) else math.nan


def sensitivity(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> float:
    """SE (recall): TP / (TP + FN)."""
    return _macro([_ratio(tp, tp + fn) for tp, _, _, fn in _counts(y_true, y_prob, threshold)])


def specificity(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> float:
    """SP: TN / (TN + FP)."""
    return _macro([_ratio(tn, tn + fp) for _, fp, tn, _ in _counts(y_true, y_prob, threshold)])


def precision(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> float:
    """Precision (PPV): TP / (TP + FP)."""
    return _macro([_ratio(tp, tp + fp) for tp, fp, _, _ in _counts(y_true, y_prob, threshold)])


def f1(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> float:
    """F1: 2 TP / (2 TP + FP + FN)."""
    return _macro(
        [_ratio(2 * tp, 2 * tp + fp + fn) for tp, fp, _, fn in _counts(y_true, y_prob, threshold)]
    )


def auc(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> float:
    """ROC AUC (threshold-free); macro one-vs-rest for multiclass."""
    if y_prob.ndim == 1:
        return binary_auc(y_true, y_prob)
    return _macro([binary_auc(y_true == c, y_prob[:, c]) for c in range(y_prob.shape[1])])


@hookimpl
def mtl_register_metrics(registry):
    registry.register("acc", accuracy)
    registry.register("se", sensitivity)
    registry.register("sp", specificity)
    registry.register("precision", precision)
    registry.register("f1", f1)
    registry.register("auc", auc)
