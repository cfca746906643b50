"""The conformance kit (mtlkit.testing) over every built-in registry entry, as timm's tests
run over its model registry: small inputs, ``pretrained: false``, tiny generated files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_dicom import gray, write_dicom
from test_labelimg import case, labels_for

from mtlkit.components.host import PluginHost
from mtlkit.plugins.heads import (
    ALNMHead,
    ALNMOptions,
    BMHead,
    BMOptions,
    BurdenHead,
    BurdenOptions,
)
from mtlkit.plugins.synthetic.phantoms import PhantomSettings, generate_phantoms, write_phantom_set
from mtlkit.testing import check_entry

HOST = PluginHost()
BUILTIN = sorted(
    (entry.kind, entry.name)
    for registry in HOST.registries.values()
    for entry in registry
    if HOST.owner_distribution(entry.owner) == "mtlkit"
)


def manifest_fixture(tmp_path: Path) -> dict[str, Any]:
    write_phantom_set(generate_phantoms(PhantomSettings(patients=3, image_size=32), 0), tmp_path)
    return {"path": str(tmp_path / "manifest.csv")}


def busi_fixture(tmp_path: Path) -> dict[str, Any]:
    """BUSI's original layout, one image (with its mask) per class."""
    for label in ("benign", "malignant"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (12, 10), (90, 90, 90)).save(tmp_path / label / f"{label} (1).png")
        mask = np.zeros((10, 12), dtype=np.uint8)
        mask[2:6, 3:8] = 255
        Image.fromarray(mask).save(tmp_path / label / f"{label} (1)_mask.png")
    return {"root": str(tmp_path)}


def labelimg_fixture(tmp_path: Path) -> dict[str, Any]:
    names = [case(tmp_path / "img", name) for name in ("a.png", "b.png")]
    return {"images": str(tmp_path / "img"), "labels": str(labels_for(tmp_path, names))}


def dicom_fixture(tmp_path: Path) -> dict[str, Any]:
    write_dicom(tmp_path / "study" / "IM0001", gray(value=10), patient="A")
    write_dicom(tmp_path / "study" / "IM0002", gray(value=20), patient="B")
    return {"root": str(tmp_path)}


def bm_and_alnm() -> dict[str, Any]:
    return {"heads": [BMHead(BMOptions()), ALNMHead(ALNMOptions())]}


def chain() -> dict[str, Any]:
    """bm, alnm, alnm_ge2 and alnm_ge3 (with a head the pairs leave out: alnm_ge3)."""
    burden = [BurdenHead(BurdenOptions(min_nodes=n)) for n in (2, 3)]
    return {"heads": [*bm_and_alnm()["heads"], *burden]}


CHAIN = [["bm", "alnm"], ["alnm", "alnm_ge2"]]


# (kind, name) -> (options, or a function of a temporary folder returning them; context)
CASES: dict[tuple[str, str], tuple[dict[str, Any] | Callable[[Path], dict], dict[str, Any]]] = {
    ("backbone", "timm"): ({"model": "resnet10t"}, {}),
    ("backbone", "resnet50"): ({}, {}),  # checked at 32 px
    ("head", "binary"): (
        {"name": "large", "label": "size", "threshold": 20},
        {"labels": [{"size": 25}, {"size": "3"}, {"size": ""}, {"size": "big"}]},
    ),
    ("head", "multiclass"): (
        {
            "name": "subtype",
            "label": "subtype",
            "classes": ["luminal_a", "luminal_b", "her2", "triple_negative"],
        },
        {"labels": [{"subtype": "her2"}, {"subtype": "Luminal_A"}, {"subtype": None}]},
    ),
    ("head", "bm"): ({}, {"labels": [{"bm": "malignant"}, {"bm": 0}, {"bm": "nan"}]}),
    ("head", "alnm"): (
        {},
        {"labels": [{"bm": "malignant", "alnm_count": 2}, {"bm": "benign", "alnm_count": ""}]},
    ),
    ("head", "alnm_burden"): (
        {"min_nodes": 3, "loss": {"type": "bce", "pos_weight": 2.0}},
        {"labels": [{"bm": "malignant", "alnm_count": 3}, {"bm": "malignant", "alnm_count": 1}]},
    ),
    ("task_loss", "bce"): ({"pos_weight": 3.0}, {}),
    ("task_loss", "cross_entropy"): ({"label_smoothing": 0.1}, {}),
    ("task_loss", "dice_bce"): ({"dice_weight": 0.5}, {}),
    ("head", "segmentation"): ({"width": 8}, {}),
    ("constraint", "hierarchical_hinge"): ({"pairs": [["bm", "alnm"]]}, bm_and_alnm()),
    ("constraint", "coherent"): ({"pairs": CHAIN}, chain()),  # form: max
    ("weighting", "equal"): ({"weights": {"bm": 2.0}}, {"task_names": ["bm", "alnm"]}),
    ("weighting", "uncertainty"): ({"init_log_variance": 0.5}, {"task_names": ["bm", "alnm"]}),
    ("weighting", "dwa"): ({"temperature": 2.0}, {"task_names": ["bm", "alnm"]}),
    **{("metric", name): ({}, {}) for name in ("acc", "se", "sp", "precision", "f1", "auc")},
    ("data_source", "synthetic"): ({"patients": 3, "image_size": 32}, {}),
    ("data_source", "manifest"): (manifest_fixture, {}),
    ("data_source", "busi"): (busi_fixture, {}),
    ("data_source", "labelimg"): (labelimg_fixture, {}),
    ("data_source", "dicom"): (dicom_fixture, {}),
    ("report", "summary"): ({}, {}),
    ("report", "markdown"): ({}, {}),
    ("report", "gradcam"): ({}, {}),  # without an engine (files only) it writes nothing
    ("report", "plots"): ({}, {}),
    ("report", "html"): ({}, {}),
    ("report", "model_card"): ({}, {}),
    ("logger", "tensorboard"): ({}, {}),
    ("logger", "mlflow"): ({}, {}),
    ("command", "data synth"): ({}, {}),
    ("command", "radiomics"): ({}, {}),
    ("baseline", "radiomics"): ({}, {}),
    ("command", "explain"): ({}, {}),
    ("command", "predict"): ({}, {}),
    ("command", "report"): ({}, {}),
    ("optimizer", "adam"): ({"lr": 0.01}, {}),
    ("optimizer", "adamw"): ({"lr": 0.01, "weight_decay": 0.01}, {}),
    ("optimizer", "sgd"): ({"lr": 0.01}, {}),
    ("scheduler", "step"): ({"step_size": 2, "gamma": 0.5}, {}),
    ("scheduler", "cosine"): ({}, {}),
    ("scheduler", "none"): ({}, {}),
}

# Further options of a built-in entry that change what it does, checked the same way.
MORE_CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("constraint", "coherent", {"pairs": CHAIN, "form": "conditional"}, chain()),
    (
        "constraint",
        "coherent",
        {
            "pairs": [
                ["bm", "alnm"],
                ["bm", "alnm_ge2"],
                ["alnm", "alnm_ge3"],
                ["alnm_ge2", "alnm_ge3"],
            ],
            "form": "conditional",
        },
        chain(),
    ),
]


def test_every_builtin_entry_has_a_conformance_case():
    assert "head" in {kind for kind, _ in BUILTIN}  # the listing itself works
    assert sorted(CASES) == BUILTIN, "add a CASES entry for each new built-in component"


@pytest.mark.parametrize("kind, name", BUILTIN, ids=[f"{k}:{n}" for k, n in BUILTIN])
def test_builtin_entry_conforms(kind, name, tmp_path):
    options, context = CASES[(kind, name)]
    if callable(options):
        options = options(tmp_path)
    built = check_entry(HOST.registries[kind].get(name), options or None, **context)
    assert built is not None


@pytest.mark.parametrize(
    "kind, name, options, context",
    MORE_CASES,
    ids=[f"{k}:{n}:{i}" for i, (k, n, _, _) in enumerate(MORE_CASES)],
)
def test_builtin_entry_conforms_with_other_options(kind, name, options, context):
    assert check_entry(HOST.registries[kind].get(name), options, **context) is not None
