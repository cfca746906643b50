"""The molecular subtype of a malignant breast lesion as an mtlkit task (a plugin of its own
distribution: ``pip install -e examples/molecular_subtype``). Registers the head ``subtype``,
a softmax over four subtypes whose rows without a subtype (benign lesions) are masked, and
the metric ``ovr_auc``, each class's one-vs-rest AUC with their macro mean."""

from __future__ import annotations

from pydantic import Field

from mtlkit import MulticlassHead, MulticlassOptions, binary_auc, hookimpl

SUBTYPES = ["luminal A", "luminal B", "HER2-enriched", "triple-negative"]


class SubtypeOptions(MulticlassOptions):
    name: str = "subtype"
    label: str = Field("subtype", description="data column holding the subtype")
    classes: list[str] = Field(default_factory=lambda: list(SUBTYPES), min_length=2)


class SubtypeHead(MulticlassHead):
    """Molecular subtype: luminal A, luminal B, HER2-enriched or triple-negative."""

    Options = SubtypeOptions


def ovr_auc(y_true, y_prob, threshold):
    """Each class's one-vs-rest ROC AUC (mtlkit adds their mean); a binary task's AUC."""
    if y_prob.ndim == 1:
        return binary_auc(y_true, y_prob)
    return [binary_auc(y_true == c, y_prob[:, c]) for c in range(y_prob.shape[1])]


@hookimpl
def mtl_register_heads(registry):
    registry.register("subtype", SubtypeHead)


@hookimpl
def mtl_register_metrics(registry):
    registry.register("ovr_auc", ovr_auc)
