"""Consistency of the predictions with the tasks' hierarchy: which relations are checked
(the heads' own hierarchy, the constraints', or the config's), and the shares measured."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_raw

from mtlkit import Engine, load_config
from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import resolve_components
from mtlkit.errors import ConfigError
from mtlkit.evaluation.consistency import chains, implied_relations, measure_consistency
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

CHAIN = [("bm", "alnm"), ("alnm", "alnm_ge2"), ("alnm_ge2", "alnm_ge3"), ("alnm_ge3", "alnm_ge4")]

P = {
    "bm": np.array([0.9, 0.2, 0.5]),
    "alnm": np.array([0.3, 0.6, 0.65]),
    "alnm_ge2": np.array([0.6, 0.9, 0.2]),
}


def burden(k: int) -> BurdenHead:
    return BurdenHead(BurdenOptions(min_nodes=k))


def test_the_paper_heads_imply_each_other_in_a_chain():
    heads = [BMHead(BMOptions()), ALNMHead(ALNMOptions()), burden(2), burden(3), burden(4)]
    assert implied_relations(heads) == CHAIN
    # The order of the heads in the config does not change the hierarchy.
    assert sorted(implied_relations(heads[::-1])) == sorted(CHAIN)


def test_heads_without_a_defined_relation_imply_nothing():
    size = BinaryHead(BinaryOptions(name="large", label="size_mm", threshold=20))
    side = BinaryHead(BinaryOptions(name="left", label="side", positive=["l"], negative=["r"]))
    assert implied_relations([BMHead(BMOptions()), size, side]) == []
    # A count head without ALNM's "negative for benign" rule does not imply BM.
    nodes = BinaryHead(BinaryOptions(name="nodes", label="alnm_count", threshold=1, count=True))
    assert implied_relations([BMHead(BMOptions()), nodes]) == []
    # ALNM >= 2 implies it (its extra "negative for benign" rule only adds negatives) ...
    assert implied_relations([nodes, burden(2)]) == [("nodes", "alnm_ge2")]
    # ... and ALNM >= 1 implies ALNM >= 2 nowhere.
    assert implied_relations([ALNMHead(ALNMOptions()), burden(2)]) == [("alnm", "alnm_ge2")]


def test_chains_are_the_maximal_paths_of_three_or_more():
    assert chains(CHAIN) == [["bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"]]
    assert chains([("a", "b")]) == []
    assert chains([("a", "b"), ("b", "c"), ("a", "d")]) == [["a", "b", "c"]]


def test_measured_shares_by_hand():
    shares = measure_consistency([("bm", "alnm"), ("alnm", "alnm_ge2")], P, 0.5, 0.1)
    # alnm > 0.5 while bm <= 0.5: images 2 (0.6 vs 0.2) and 3 (0.65 vs 0.5)
    assert shares["alnm_without_bm"] == pytest.approx(2 / 3)
    # alnm_ge2 > 0.5 while alnm <= 0.5: image 1 (0.6 vs 0.3)
    assert shares["alnm_ge2_without_alnm"] == pytest.approx(1 / 3)
    # more than 0.1 above the parent: alnm 0.6 vs bm 0.2 and 0.65 vs 0.5; ge2 0.6 vs 0.3, 0.9 vs 0.6
    assert shares["alnm_above_bm"] == pytest.approx(2 / 3)
    assert shares["alnm_ge2_above_alnm"] == pytest.approx(2 / 3)
    # bm >= alnm >= alnm_ge2 fails for every image (1: ge2 > alnm; 2, 3: alnm > bm)
    assert shares["nonmonotonic:bm>alnm>alnm_ge2"] == pytest.approx(1.0)


def test_the_threshold_and_margin_are_the_given_ones():
    shares = measure_consistency([("bm", "alnm")], P, 0.62, 0.2)
    assert shares["alnm_without_bm"] == pytest.approx(1 / 3)  # image 3 only (0.65 vs 0.5)
    assert shares["alnm_above_bm"] == pytest.approx(1 / 3)  # image 2 only (0.6 vs 0.2)


def test_monotonic_predictions_are_consistent():
    ordered = {"a": np.array([0.9, 0.4]), "b": np.array([0.8, 0.4]), "c": np.array([0.1, 0.3])}
    shares = measure_consistency([("a", "b"), ("b", "c")], ordered, 0.5, 0.0)
    assert set(shares.values()) == {0.0}


def test_an_empty_split_or_a_missing_task_is_skipped():
    empty = {k: np.zeros(0) for k in P}
    assert measure_consistency([("bm", "alnm")], empty, 0.5, 0.1) == {}
    assert measure_consistency([("bm", "absent")], P, 0.5, 0.1) == {}


def relations_of(**overrides) -> list[tuple[str, str]]:
    raw = tiny_raw()
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    return resolve_components(load_config(raw), PluginHost()).consistency


def test_relations_default_to_the_heads_hierarchy_with_or_without_a_constraint():
    assert relations_of() == CHAIN
    assert relations_of(constraints=[]) == CHAIN
    # A constraint's own pairs come first, then the heads' hierarchy.
    hinge = {"type": "hierarchical_hinge", "pairs": [["bm", "alnm_ge4"]]}
    assert relations_of(constraints=[hinge]) == [("bm", "alnm_ge4"), *CHAIN]


def test_relations_from_the_config_replace_the_default():
    assert relations_of(evaluation__consistency=[["bm", "alnm_ge2"]]) == [("bm", "alnm_ge2")]
    assert relations_of(evaluation__consistency=[]) == []


def test_relations_from_the_config_must_name_binary_tasks():
    with pytest.raises(ConfigError) as info:
        relations_of(evaluation__consistency=[["bm", "nodes"], ["alnm", "alnm"]])
    text = str(info.value)
    assert "evaluation.consistency[0]" in text and "'nodes'" in text
    assert "evaluation.consistency[1]" in text and "itself" in text


def test_a_model_trained_without_a_constraint_is_still_measured():
    raw = tiny_raw(constraints=[])
    raw["training"]["epochs"] = 1
    engine = Engine(load_config(raw))
    engine.fit()
    result = engine.evaluate("test")
    assert "alnm_without_bm" in result.consistency
    assert "nonmonotonic:bm>alnm>alnm_ge2>alnm_ge3>alnm_ge4" in result.consistency
    probs = result.predictions.probabilities
    expected = float(np.mean((probs["alnm"] > 0.5) & (probs["bm"] <= 0.5)))
    assert result.consistency["alnm_without_bm"] == pytest.approx(expected)
