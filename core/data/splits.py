"""Patient-level, label-stratified train/validation/test splits."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from mtlkit.errors import DataError

SPLITS = ("train", "val", "test")


def patient_split(
    patient_ids: Sequence[str],
    strata: Sequence[tuple],
    *,
    test_fraction: float,
    val_fraction: float,
    seed: int,
) -> list[str]:
    """Assign every image a split so that each patient's images share one split.

    ``strata`` gives each image's stratification key (e.g. its BM target); a patient's key
    is its images' most severe key, so that malignant patients are spread evenly. Returns one
    split name per image, in input order.
    """
    patient_key = _patient_keys(patient_ids, strata)
    by_stratum: dict[tuple, list[str]] = defaultdict(list)
    for patient in sorted(patient_key):
        by_stratum[patient_key[patient]].append(patient)
    if len(patient_key) < 3:
        raise DataError(
            "a patient-level split needs at least 3 patients (patients sharing near-duplicate "
            f"images count as one), got {len(patient_key)}"
        )

    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    carry = {"test": 0.0, "val": 0.0}  # fractional remainders carried across strata
    for key in sorted(by_stratum):
        patients = by_stratum[key]
        order = rng.permutation(len(patients))
        counts = {}
        for split, fraction in (("test", test_fraction), ("val", val_fraction)):
            exact = len(patients) * fraction + carry[split]
            counts[split] = math.floor(exact + 0.5)
            carry[split] = exact - counts[split]
        counts["test"] = min(counts["test"], len(patients))
        counts["val"] = min(counts["val"], len(patients) - counts["test"])
        for rank, index in enumerate(order):
            patient = patients[index]
            if rank < counts["test"]:
                assignment[patient] = "test"
            elif rank < counts["test"] + counts["val"]:
                assignment[patient] = "val"
            else:
                assignment[patient] = "train"
    return [assignment[p] for p in patient_ids]


def patient_folds(
    patient_ids: Sequence[str],
    strata: Sequence[tuple],
    *,
    folds: int,
    val_fraction: float,
    seed: int,
) -> list[list[str]]:
    """k-fold cross-validation: every patient is in the test part of exactly one fold.

    Patients are dealt to folds stratum by stratum (continuing where the last stratum
    stopped, so fold sizes differ by at most one patient per stratum); in each fold a
    validation part of ``val_fraction`` of all patients is drawn from the other folds.
    Returns, per fold, one split name per image.
    """
    patient_key = _patient_keys(patient_ids, strata)
    if len(patient_key) < folds:
        raise DataError(
            f"{folds} folds need at least {folds} patients (patients sharing near-duplicate "
            f"images count as one), got {len(patient_key)}"
        )
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    dealt = 0
    for key in sorted(set(patient_key.values())):
        patients = sorted(p for p, k in patient_key.items() if k == key)
        for index in rng.permutation(len(patients)):
            fold_of[patients[index]] = dealt % folds
            dealt += 1
    result = []
    rest_fraction = (folds - 1) / folds
    for fold in range(folds):
        rest = [i for i, p in enumerate(patient_ids) if fold_of[p] != fold]
        inner = patient_split(
            [patient_ids[i] for i in rest],
            [strata[i] for i in rest],
            test_fraction=0.0,
            val_fraction=min(val_fraction / rest_fraction, 0.99),
            seed=seed + 1 + fold,
        )
        splits = ["test"] * len(patient_ids)
        for i, split in zip(rest, inner, strict=True):
            splits[i] = split
        result.append(splits)
    return result


def _patient_keys(patient_ids: Sequence[str], strata: Sequence[tuple]) -> dict[str, tuple]:
    """Each patient's stratum: its images' most severe key."""
    if len(patient_ids) != len(strata):
        raise ValueError("patient_ids and strata differ in length")
    patient_key: dict[str, tuple] = {}
    for patient, key in zip(patient_ids, strata, strict=True):
        patient_key[patient] = max(patient_key.get(patient, key), key)
    return patient_key


def strata_key(values: Sequence[float]) -> tuple:
    """A sortable stratification key from task targets; unknown (NaN) sorts first."""
    return tuple(-1.0 if math.isnan(v) else float(v) for v in values)
