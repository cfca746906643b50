"""Patient-level, label-stratified splits."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from mtlkit.data.splits import patient_split, strata_key
from mtlkit.errors import DataError


def cohort(n_patients: int = 120, positive_share: float = 0.3, seed: int = 7):
    """Images of patients with 1-4 images each; a patient's images share its label."""
    rng = np.random.default_rng(seed)
    patients, strata, labels = [], [], {}
    for p in range(n_patients):
        pid = f"P{p:04d}"
        label = float(rng.random() < positive_share)
        labels[pid] = label
        for _ in range(int(rng.integers(1, 5))):
            patients.append(pid)
            strata.append(strata_key([label]))
    order = rng.permutation(len(patients))  # images need not come grouped by patient
    return [patients[i] for i in order], [strata[i] for i in order], labels


def split_patients(patients, splits) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for patient, split in zip(patients, splits, strict=True):
        out[split].add(patient)
    return out


def test_no_patient_is_in_two_splits():
    patients, strata, _ = cohort()
    splits = patient_split(patients, strata, test_fraction=0.3, val_fraction=0.15, seed=0)
    assert len(splits) == len(patients)
    seen: dict[str, str] = {}
    for patient, split in zip(patients, splits, strict=True):
        assert seen.setdefault(patient, split) == split, f"{patient} in {seen[patient]} and {split}"
    groups = split_patients(patients, splits)
    assert not (
        groups["train"] & groups["test"]
        or groups["train"] & groups["val"]
        or groups["val"] & groups["test"]
    )


@pytest.mark.parametrize("test_fraction, val_fraction", [(0.3, 0.15), (0.2, 0.1), (0.5, 0.0)])
def test_patient_fractions_are_close_to_requested(test_fraction, val_fraction):
    patients, strata, labels = cohort(n_patients=200)
    splits = patient_split(
        patients, strata, test_fraction=test_fraction, val_fraction=val_fraction, seed=1
    )
    groups = split_patients(patients, splits)
    n = len(labels)
    assert abs(len(groups["test"]) - test_fraction * n) <= 1.5
    assert abs(len(groups["val"]) - val_fraction * n) <= 1.5
    assert len(groups["train"]) + len(groups["val"]) + len(groups["test"]) == n


def test_stratification_keeps_the_positive_share():
    patients, strata, labels = cohort(n_patients=200, positive_share=0.25)
    splits = patient_split(patients, strata, test_fraction=0.3, val_fraction=0.15, seed=2)
    groups = split_patients(patients, splits)
    overall = np.mean(list(labels.values()))
    for split, members in groups.items():
        share = np.mean([labels[p] for p in members])
        assert abs(share - overall) <= 0.04, f"{split}: {share:.3f} vs {overall:.3f}"


def test_patient_stratum_is_its_most_severe_image():
    # Ten patients have a negative and a positive image, ten only negative ones. If a
    # patient counts as positive, each group is its own stratum and exactly 30% of the
    # mixed patients land in test, whatever the seed.
    patients = [f"M{i}" for i in range(10) for _ in range(2)] + [f"N{i}" for i in range(10)]
    strata = [strata_key([float(j)]) for _ in range(10) for j in range(2)]
    strata += [strata_key([0.0])] * 10
    for seed in range(10):
        splits = patient_split(patients, strata, test_fraction=0.3, val_fraction=0.2, seed=seed)
        groups = split_patients(patients, splits)
        mixed_test = {p for p in groups["test"] if p.startswith("M")}
        mixed_val = {p for p in groups["val"] if p.startswith("M")}
        assert (len(mixed_test), len(mixed_val)) == (3, 2), seed


def test_unknown_labels_form_their_own_stratum():
    assert strata_key([math.nan, 1.0]) == (-1.0, 1.0)
    patients = [f"P{i}" for i in range(40)]
    strata = [strata_key([math.nan]) if i < 20 else strata_key([1.0]) for i in range(40)]
    splits = patient_split(patients, strata, test_fraction=0.25, val_fraction=0.0, seed=3)
    unknown_test = sum(s == "test" for s in splits[:20])
    known_test = sum(s == "test" for s in splits[20:])
    assert unknown_test == known_test == 5


def test_same_seed_same_split_other_seed_other_split():
    patients, strata, _ = cohort()
    kwargs = dict(test_fraction=0.3, val_fraction=0.15)
    first = patient_split(patients, strata, seed=11, **kwargs)
    assert patient_split(patients, strata, seed=11, **kwargs) == first
    assert patient_split(patients, strata, seed=12, **kwargs) != first


def test_split_does_not_depend_on_image_order():
    patients, strata, _ = cohort()
    kwargs = dict(test_fraction=0.3, val_fraction=0.15, seed=5)
    first = dict(zip(patients, patient_split(patients, strata, **kwargs), strict=True))
    rev = patient_split(patients[::-1], strata[::-1], **kwargs)
    assert dict(zip(patients[::-1], rev, strict=True)) == first


def test_zero_validation_fraction_gives_no_validation_split():
    patients, strata, _ = cohort(n_patients=30)
    splits = patient_split(patients, strata, test_fraction=0.3, val_fraction=0.0, seed=0)
    assert "val" not in splits
    assert Counter(splits)["train"] > 0


def test_too_few_patients_is_a_data_error():
    with pytest.raises(DataError, match="at least 3 patients"):
        patient_split(["a", "a", "b"], [(0.0,)] * 3, test_fraction=0.3, val_fraction=0.1, seed=0)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        patient_split(["a", "b", "c"], [(0.0,)] * 2, test_fraction=0.3, val_fraction=0.1, seed=0)


# --- reusing an earlier run's splits.json ----------------------------------------------------


def _split_file_engine(tmp_path, **split):
    import json

    from conftest import tiny_raw

    from mtlkit import Engine, load_config

    raw = tiny_raw()
    raw["data"]["split"].update(split)
    engine = Engine(load_config(raw))
    return engine, json


def test_a_saved_split_file_is_reused_exactly(tmp_path):
    first, json = _split_file_engine(tmp_path)
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(first.data.split_file()))
    again, _ = _split_file_engine(tmp_path, seed=123, file=str(path))
    assert again.data.splits == first.data.splits
    redrawn, _ = _split_file_engine(tmp_path, seed=123)
    assert redrawn.data.splits != first.data.splits  # the file, not the seed, decided


def test_a_split_file_that_does_not_fit_is_a_data_error(tmp_path):
    from mtlkit import DataError

    first, json = _split_file_engine(tmp_path)
    content = first.data.split_file()
    dropped = content["train"]["images"].pop()
    moved = content["test"]["images"][0]  # its patient's other images stay in test
    content["train"]["images"].append(moved)
    content["test"]["images"].remove(moved)
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(content))
    engine, _ = _split_file_engine(tmp_path, file=str(path))
    with pytest.raises(DataError) as info:
        engine.load_data()
    message = str(info.value)
    assert f"image {dropped} is not in the split file" in message
    assert "is in test, train" in message
