"""splits.json: which image and patient went to which split, written and read back exactly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mtlkit.data.samples import Sample
from mtlkit.data.splits import SPLITS
from mtlkit.errors import DataError, list_problems
from mtlkit.readback import read_json, validated

VERSION = 1
WHAT = "splits.json written by mtlkit"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    images: list[str]
    patients: list[str]


class _Fold(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # version, linked_patients
    train: _Part
    val: _Part
    test: _Part


class _Folds(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    folds: list[_Fold] = Field(min_length=1)


def split_document(
    samples: Sequence[Sample], folds: Sequence[Sequence[str]], groups: Sequence[str]
) -> dict[str, Any]:
    """The content of splits.json; one fold is a plain train/val/test split.

    ``groups`` is each image's split unit (its patient, joined with every patient it shares
    a near-duplicate image with); units of several patients are recorded as well.
    """

    def one(splits: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split in SPLITS:
            chosen = [s for s, where in zip(samples, splits, strict=True) if where == split]
            out[split] = {
                "images": [s.image_id for s in chosen],
                "patients": sorted({s.patient_id for s in chosen}),
            }
        return out

    patients_of: dict[str, set[str]] = {}
    for sample, group in zip(samples, groups, strict=True):
        patients_of.setdefault(group, set()).add(sample.patient_id)
    linked = sorted(sorted(p) for p in patients_of.values() if len(p) > 1)
    document: dict[str, Any] = {"version": VERSION}
    if len(folds) == 1:
        document.update(one(folds[0]))
    else:
        document["folds"] = [one(f) for f in folds]
    document["linked_patients"] = linked
    return document


def read_split_file(
    path: Path, samples: Sequence[Sample], groups: Sequence[str]
) -> list[list[str]]:
    """The split of every sample, per fold, as an earlier run's splits.json recorded it.

    Every image must be listed exactly once per fold, and no patient or near-duplicate
    group (``groups``, each image's split unit) may straddle two splits.
    """
    try:
        content = read_json(path, WHAT, error=DataError)
    except FileNotFoundError:
        raise DataError(f"split file not found: {path}") from None
    schema = _Folds if isinstance(content, dict) and "folds" in content else _Fold
    document = validated(content, schema, path, WHAT, DataError)
    parts = document.folds if isinstance(document, _Folds) else [document]
    folds: list[dict[str, str]] = []
    problems: list[str] = []
    for number, part in enumerate(parts, start=1):
        where = f"fold {number}: " if len(parts) > 1 else ""
        assigned: dict[str, str] = {}
        for split in SPLITS:
            for image in getattr(part, split).images:
                if image in assigned:
                    problems.append(
                        f"{where}image {image} is listed twice ({assigned[image]} and {split})"
                    )
                assigned.setdefault(image, split)
        folds.append(assigned)
    if problems:
        raise DataError(list_problems(f"{path} is not a valid {WHAT}:", problems))
    ids = [s.image_id for s in samples]
    for number, assigned in enumerate(folds, start=1):
        where = f"fold {number}: " if len(folds) > 1 else ""
        problems += [f"{where}image {i} is not in the split file" for i in ids if i not in assigned]
        problems += [
            f"{where}image {i} is in the split file but not in the data"
            for i in sorted(set(assigned) - set(ids))
        ]
        known = [i for i, s in enumerate(samples) if s.image_id in assigned]
        problems += leaks(
            [samples[i] for i in known],
            [assigned[samples[i].image_id] for i in known],
            [groups[i] for i in known],
            where,
        )
    if problems:
        raise DataError(list_problems(f"{path} does not fit this data:", problems))
    return [[assigned[i] for i in ids] for assigned in folds]


def training_images(path: Path) -> list[set[str]]:
    """The images each fold of a splits.json trains on."""
    content = read_json(path, WHAT, error=DataError)
    schema = _Folds if isinstance(content, dict) and "folds" in content else _Fold
    document = validated(content, schema, path, WHAT, DataError)
    parts = document.folds if isinstance(document, _Folds) else [document]
    return [set(part.train.images) for part in parts]


def leaks(
    samples: Sequence[Sample], splits: Sequence[str], groups: Sequence[str], fold: str = ""
) -> list[str]:
    """Patients, and groups of patients linked by near-duplicate images, found in more than
    one split."""
    problems = []
    places: dict[str, set[str]] = {}
    for sample, split in zip(samples, splits, strict=True):
        places.setdefault(sample.patient_id, set()).add(split)
    problems += [
        f"{fold}patient {patient} is in {', '.join(sorted(found))}"
        for patient, found in places.items()
        if len(found) > 1
    ]
    units: dict[str, dict[str, set[str]]] = {}  # group -> split -> patients
    for sample, group, split in zip(samples, groups, splits, strict=True):
        units.setdefault(group, {}).setdefault(split, set()).add(sample.patient_id)
    for parts in units.values():
        patients = [p for members in parts.values() for p in members]
        if len(parts) > 1 and len(patients) == len(set(patients)):  # else a patient leak
            text = "; ".join(
                f"{split}: {', '.join(sorted(p))}" for split, p in sorted(parts.items())
            )
            problems.append(f"{fold}near-duplicate images link patients across splits ({text})")
    return problems
