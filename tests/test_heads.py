"""Task heads turn raw label values into targets: 1, 0, a class index, or NaN when unknown."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from mtlkit import MulticlassHead, MulticlassOptions
from mtlkit.config.schema import DataConfig
from mtlkit.data.inspection import prepare_data
from mtlkit.data.samples import Sample, SampleSet
from mtlkit.data.targets import build_targets, repeated_images
from mtlkit.errors import DataError
from mtlkit.plugins.heads import (
    ALNMHead,
    ALNMOptions,
    BinaryHead,
    BinaryOptions,
    BMHead,
    BMOptions,
    BurdenHead,
    BurdenOptions,
)


def bm_head() -> BMHead:
    return BMHead(BMOptions())


def alnm_head() -> ALNMHead:
    return ALNMHead(ALNMOptions())


def burden_head(k: int) -> BurdenHead:
    return BurdenHead(BurdenOptions(min_nodes=k))


# --- BM -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, target",
    [
        ("malignant", 1.0), ("benign", 0.0), ("Malignant ", 1.0), (" BENIGN", 0.0),
        (1, 1.0), (0, 0.0), (1.0, 1.0), ("1", 1.0), ("0", 0.0), ("1.0", 1.0), ("0.0", 0.0),
        (True, 1.0), (False, 0.0), (np.int64(1), 1.0), (np.float64(0.0), 0.0),
    ],
)  # fmt: skip
def test_bm_targets(value, target):
    assert bm_head().target({"bm": value}) == target


@pytest.mark.parametrize(
    "value", [None, "", "   ", float("nan"), "nan", "NA", "n/a", "None", "null", np.float64("nan")]
)
def test_bm_missing_values_are_nan(value):
    assert math.isnan(bm_head().target({"bm": value}))


def test_bm_absent_column_is_nan():
    assert math.isnan(bm_head().target({"other": "malignant"}))


@pytest.mark.parametrize("value", ["borderline", 2, "0.5", "yes"])
def test_bm_unknown_value_lists_the_allowed_ones(value):
    with pytest.raises(ValueError) as info:
        bm_head().target({"bm": value})
    message = str(info.value)
    assert "bm=" in message and repr(value) in message
    assert "allowed: 0, 1, benign, malignant" in message


# --- ALNM and nodal burden ------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, target",
    [
        ({"bm": "malignant", "alnm_count": 0}, 0.0),
        ({"bm": "malignant", "alnm_count": 1}, 1.0),
        ({"bm": "malignant", "alnm_count": "3"}, 1.0),
        ({"bm": "malignant", "alnm_count": "0.0"}, 0.0),
        ({"bm": None, "alnm_count": 2}, 1.0),  # unknown BM does not hide a known count
        ({"bm": "benign", "alnm_count": ""}, 0.0),  # benign: no nodal metastasis
        ({"bm": "benign", "alnm_count": None}, 0.0),
        ({"bm": 0, "alnm_count": float("nan")}, 0.0),
        ({"bm": "benign"}, 0.0),
    ],
)
def test_alnm_targets(labels, target):
    assert alnm_head().target(labels) == target


@pytest.mark.parametrize(
    "labels",
    [
        {"bm": "malignant", "alnm_count": ""},
        {"bm": "malignant", "alnm_count": None},
        {"bm": "malignant"},
        {"bm": None, "alnm_count": "NA"},
    ],
)
def test_alnm_unknown_count_is_nan(labels):
    assert math.isnan(alnm_head().target(labels))


@pytest.mark.parametrize("count", ["many", "2+", "three"])
def test_threshold_on_a_non_numeric_value_raises(count):
    with pytest.raises(ValueError) as info:
        alnm_head().target({"bm": "malignant", "alnm_count": count})
    assert "not a number" in str(info.value) and repr(count) in str(info.value)


@pytest.mark.parametrize("count", [-1, "-2", 1.5, "2.5"])
def test_node_counts_must_be_non_negative_integers(count):
    with pytest.raises(ValueError, match="not a count"):
        alnm_head().target({"bm": "malignant", "alnm_count": count})
    with pytest.raises(ValueError, match="not a count"):
        burden_head(2).target({"bm": "malignant", "alnm_count": count})


@pytest.mark.parametrize("bm", ["benign", 0, "0"])
def test_a_benign_tumour_with_metastatic_nodes_is_a_contradiction(bm):
    with pytest.raises(ValueError) as info:
        alnm_head().target({"bm": bm, "alnm_count": 2})
    assert "means negative" in str(info.value) and "alnm_count=2" in str(info.value)
    # a benign tumour with zero nodes, or an unknown count, is consistent
    assert alnm_head().target({"bm": bm, "alnm_count": 0}) == 0.0
    assert alnm_head().target({"bm": bm, "alnm_count": ""}) == 0.0


@pytest.mark.parametrize(
    "k, count, target",
    [
        (2, 1, 0.0),
        (2, 2, 1.0),
        (3, 2, 0.0),
        (3, 3, 1.0),
        (3, "3.0", 1.0),
        (4, 7, 1.0),
    ],
)
def test_burden_targets(k, count, target):
    assert burden_head(k).target({"bm": "malignant", "alnm_count": count}) == target


def test_burden_benign_is_negative_and_unknown_is_nan():
    head = burden_head(3)
    assert head.target({"bm": "benign", "alnm_count": None}) == 0.0
    assert math.isnan(head.target({"bm": "malignant", "alnm_count": None}))


def test_burden_default_name_follows_min_nodes():
    assert burden_head(3).name == "alnm_ge3"
    assert burden_head(2).name == "alnm_ge2"
    assert BurdenHead(BurdenOptions(min_nodes=3, name="heavy")).name == "heavy"


def test_burden_refuses_a_threshold_that_contradicts_min_nodes():
    with pytest.raises(ValidationError, match="min_nodes"):
        BurdenOptions(min_nodes=3, threshold=2)


def test_preset_names_and_columns():
    assert (bm_head().name, alnm_head().name) == ("bm", "alnm")
    assert alnm_head().label_columns == ("alnm_count", "bm")
    assert bm_head().label_columns == ("bm",)


# --- the generic binary head ----------------------------------------------------------------


def test_binary_head_without_values_reads_0_1_and_yes_no():
    head = BinaryHead(BinaryOptions(name="her2", label="her2"))
    assert head.target({"her2": "1"}) == 1.0
    assert head.target({"her2": 0}) == 0.0
    assert head.target({"her2": "Yes"}) == 1.0
    assert head.target({"her2": "false"}) == 0.0
    assert math.isnan(head.target({"her2": ""}))
    with pytest.raises(ValueError, match="not 0/1"):
        head.target({"her2": "maybe"})


def test_binary_head_with_values_and_negative_if():
    head = BinaryHead(
        BinaryOptions(
            name="t",
            label="grade",
            positive=["high", 3],
            negative=["low", 1, 2],
            negative_if={"bm": ["benign"]},
        )
    )
    assert head.target({"grade": "HIGH"}) == 1.0
    assert head.target({"grade": "3"}) == 1.0
    assert head.target({"grade": 2.0}) == 0.0
    assert head.target({"grade": "low", "bm": "benign"}) == 0.0
    assert head.target({"bm": "benign"}) == 0.0
    with pytest.raises(ValueError, match="means negative"):
        head.target({"grade": "high", "bm": "benign"})
    with pytest.raises(ValueError, match="allowed: 1, 2, 3, high, low"):
        head.target({"grade": "medium"})


@pytest.mark.parametrize(
    "options",
    [
        {"threshold": 1, "positive": ["a"], "negative": ["b"]},
        {"positive": ["a"]},
        {"negative": ["b"]},
    ],
)
def test_binary_options_need_one_consistent_rule(options):
    with pytest.raises(ValidationError):
        BinaryOptions(name="t", label="c", **options)


# --- multiclass -----------------------------------------------------------------------------


def size_head() -> MulticlassHead:
    return MulticlassHead(
        MulticlassOptions(name="size", label="size", classes=["small", "Medium", "large"])
    )


@pytest.mark.parametrize(
    "value, index", [("small", 0), ("medium", 1), ("MEDIUM ", 1), ("large", 2)]
)
def test_multiclass_index(value, index):
    assert size_head().target({"size": value}) == float(index)


def test_multiclass_numeric_classes():
    head = MulticlassHead(MulticlassOptions(name="g", label="g", classes=["1", "2", "3"]))
    assert head.target({"g": 2}) == 1.0
    assert head.target({"g": "3.0"}) == 2.0


def test_multiclass_unknown_class_raises_and_missing_is_nan():
    with pytest.raises(ValueError) as info:
        size_head().target({"size": "huge"})
    assert "'huge'" in str(info.value) and "small, Medium, large" in str(info.value)
    assert math.isnan(size_head().target({"size": None}))
    assert math.isnan(size_head().target({}))


def test_multiclass_shape_and_probabilities():
    import torch

    head = size_head()
    assert head.kind == "multiclass" and head.num_outputs == 3
    module = head.build_module(8)
    logits = module(torch.zeros(4, 8))
    assert logits.shape == (4, 3)
    probs = head.probabilities(logits)
    assert torch.allclose(probs.sum(dim=1), torch.ones(4))


def test_multiclass_classes_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        MulticlassHead(MulticlassOptions(name="g", label="g", classes=["a", "A"]))


# --- targets for a whole data set -----------------------------------------------------------


def sample(i: int, patient: str, **labels) -> Sample:
    image = np.random.default_rng(i).integers(0, 256, (40, 40), dtype=np.uint8)
    return Sample(
        image_id=f"img{i}",
        patient_id=patient,
        labels=labels,
        image=lambda image=image: image,
        box=(10, 10, 30, 30),
    )


def test_build_targets_matrix():
    samples = [
        sample(0, "p0", bm="malignant", alnm_count=3),
        sample(1, "p1", bm="benign", alnm_count=None),
        sample(2, "p2", bm=None, alnm_count=None),
    ]
    targets, problems = build_targets(samples, [bm_head(), alnm_head(), burden_head(3)])
    assert problems == []
    assert targets.shape == (3, 3)
    assert targets[0].tolist() == [1.0, 1.0, 1.0]
    assert targets[1].tolist() == [0.0, 0.0, 0.0]
    assert all(math.isnan(v) for v in targets[2].tolist())


def test_every_bad_row_is_listed_in_one_error():
    samples = [
        sample(0, "p0", bm="malignant", alnm_count=1),
        sample(1, "p1", bm="borderline", alnm_count=0),
        sample(2, "p2", bm="malignant", alnm_count="many"),
        sample(3, "p3", bm="benign", alnm_count=0),
        sample(4, "p4", bm="unsure", alnm_count="lots"),
    ]
    _, problems = build_targets(samples, [bm_head(), alnm_head()])
    message = "\n".join(problems)
    assert len(problems) == 4
    assert "image img1, task bm" in message
    assert "image img2, task alnm" in message
    assert "image img4, task bm" in message
    assert "image img4, task alnm" in message
    assert "img0" not in message and "img3" not in message


def test_problems_name_the_row_a_sample_came_from():
    row = Sample("a.png", "p", {"bm": "x"}, lambda: None, origin="m.csv row 7")
    _, problems = build_targets([row], [bm_head()])
    assert problems[0].startswith("image a.png (m.csv row 7), task bm")


def test_prepare_data_reports_bad_labels_before_reading_images():
    def unreadable():
        raise AssertionError("images must not be read when labels are bad")

    bad = [
        Sample(
            f"i{i}", f"p{i}", {"bm": "what" if i % 2 else "benign"}, unreadable, box=(0, 0, 4, 4)
        )
        for i in range(6)
    ]
    data = DataConfig(source={"type": "x"}, image_size=16, split={"stratify": ["bm"]})
    with pytest.raises(DataError) as info:
        prepare_data(SampleSet(bad), [bm_head()], data, {})
    message = str(info.value)
    assert "3 problem(s)" in message
    assert all(f"image i{i}," in message for i in (1, 3, 5))


def test_long_listings_are_cut_with_a_count():
    samples = [sample(i, f"p{i}", bm="x") for i in range(60)]
    data = DataConfig(source={"type": "x"}, image_size=16)
    with pytest.raises(DataError) as info:
        prepare_data(SampleSet(samples), [bm_head()], data, {})
    assert "60 problem(s)" in str(info.value)
    assert "... and 10 more" in str(info.value)


def test_an_image_listed_twice_is_a_duplicate_row_or_a_contradiction():
    samples = [
        sample(0, "p0", bm=1),
        sample(1, "p1", bm=0),
        sample(0, "p2", bm=1),
        sample(1, "p1", bm="malignant"),
    ]
    problems = repeated_images(samples, ["bm"])
    assert problems == [
        "image 'img0' is listed twice: a duplicate row",
        "image 'img1' is listed twice with different labels: bm: 0 vs 'malignant'",
    ]


def test_prepare_data_end_to_end():
    samples = [
        sample(
            i,
            f"p{i // 2}",
            bm="malignant" if i % 4 < 2 else "benign",
            alnm_count=i % 3 if i % 4 < 2 else 0,
        )
        for i in range(24)
    ]
    data = DataConfig(source={"type": "x"}, image_size=16, split={"stratify": ["bm"]})
    prepared = prepare_data(SampleSet(samples), [bm_head(), alnm_head()], data, {})
    assert prepared.cache.shape == (24, 1, 16, 16)
    assert not prepared.cache.dtype.is_floating_point
    assert set(prepared.splits) <= {"train", "val", "test"} and "train" in prepared.splits
    by_patient = {}
    for s, split in zip(samples, prepared.splits, strict=True):
        assert by_patient.setdefault(s.patient_id, split) == split
    assert prepared.task_names == ["bm", "alnm"]


def test_numpy_booleans_read_like_python_booleans():
    assert bm_head().target({"bm": np.True_}) == 1.0
    assert bm_head().target({"bm": np.False_}) == 0.0
