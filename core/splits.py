"""Patient-level, label-stratified train/validation/test splits."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .errors import DataError

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
    if len(patient_ids) != len(strata):
        raise ValueError("patient_ids and strata differ in length")
    patient_key: dict[str, tuple] = {}
    for patient, key in zip(patient_ids, strata, strict=True):
        patient_key[patient] = max(patient_key.get(patient, key), key)
    by_stratum: dict[tuple, list[str]] = defaultdict(list)
    for patient in sorted(patient_key):
        by_stratum[patient_key[patient]].append(patient)
    if len(patient_key) < 3:
        raise DataError(f"a patient-level split needs at least 3 patients, got {len(patient_key)}")

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


def strata_key(values: Sequence[float]) -> tuple:
    """A sortable stratification key from task targets; unknown (NaN) sorts first."""
    return tuple(-1.0 if math.isnan(v) else float(v) for v in values)
