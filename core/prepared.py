"""Samples turned into what training needs: targets, splits and cached RoIs."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .config import DataConfig
from .data import Sample, SampleSet
from .errors import DataError, list_problems
from .labels import as_number
from .preprocess import build_cache
from .splits import SPLITS, patient_split, strata_key
from .tasks import TaskHead


@dataclass
class PreparedData:
    """Targets (N x tasks, NaN = unknown), a split per image and the cached RoIs."""

    samples: list[Sample]
    task_names: list[str]
    targets: torch.Tensor
    splits: list[str]
    cache: torch.Tensor
    references: dict[str, np.ndarray]

    def indices(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)

    def split_file(self) -> dict[str, object]:
        """The content of splits.json: which image and patient went where."""
        out: dict[str, object] = {"version": 1}
        for split in SPLITS:
            ids = self.indices(split)
            out[split] = {
                "images": [self.samples[i].image_id for i in ids],
                "patients": sorted({self.samples[i].patient_id for i in ids}),
            }
        return out


def prepare_data(
    sample_set: SampleSet,
    heads: Sequence[TaskHead],
    data: DataConfig,
    reference_columns: Mapping[str, str],
) -> PreparedData:
    """Compute targets, split patients and cache RoIs; every bad label is listed at once."""
    samples = sample_set.samples
    if not samples:
        raise DataError(f"the data source returned no images ({sample_set.description})")
    check_unique_ids(samples)
    check_label_columns(sample_set, heads)
    targets = build_targets(samples, heads)
    check_every_task_has_labels(targets, heads)
    names = [h.name for h in heads]
    if data.split.file:
        splits = read_split_file(Path(data.split.file), samples)
    else:
        columns = [names.index(t) for t in data.split.stratify]
        strata = [strata_key(targets[i, columns].tolist()) for i in range(len(samples))]
        splits = patient_split(
            [s.patient_id for s in samples],
            strata,
            test_fraction=data.split.test_fraction,
            val_fraction=data.split.val_fraction,
            seed=data.split.seed,
        )
    if "train" not in splits:
        raise DataError("the split left no patient for training; lower the test/val fractions")
    references = {
        task: np.array([_reference(s, column) for s in samples])
        for task, column in reference_columns.items()
    }
    cache = build_cache(samples, data.roi, data.image_size)
    return PreparedData(samples, names, targets, splits, cache, references)


def read_split_file(path: Path, samples: Sequence[Sample]) -> list[str]:
    """The split of every sample as an earlier run's splits.json recorded it.

    Every image must be listed exactly once, and no patient may be in two splits.
    """
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        assigned = {image: split for split in SPLITS for image in content[split]["images"]}
    except FileNotFoundError:
        raise DataError(f"split file not found: {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a splits.json written by mtlkit ({exc})") from None
    ids = [s.image_id for s in samples]
    problems = [f"image {i} is not in the split file" for i in ids if i not in assigned]
    problems += [
        f"image {i} is in the split file but not in the data"
        for i in sorted(set(assigned) - set(ids))
    ]
    where: dict[str, set[str]] = {}
    for sample in samples:
        if sample.image_id in assigned:
            where.setdefault(sample.patient_id, set()).add(assigned[sample.image_id])
    problems += [
        f"patient {p} is in {', '.join(sorted(s))}" for p, s in where.items() if len(s) > 1
    ]
    if problems:
        raise DataError(list_problems(f"{path} does not fit this data:", problems))
    return [assigned[i] for i in ids]


def build_targets(samples: Sequence[Sample], heads: Sequence[TaskHead]) -> torch.Tensor:
    """One target per sample and task; raises DataError listing every uninterpretable value."""
    targets = torch.full((len(samples), len(heads)), math.nan, dtype=torch.float32)
    problems: list[str] = []
    for row, sample in enumerate(samples):
        for col, head in enumerate(heads):
            try:
                targets[row, col] = head.target(sample.labels)
            except ValueError as exc:
                problems.append(f"image {sample.image_id} (row {row + 1}), task {head.name}: {exc}")
    if problems:
        raise DataError(list_problems(f"{len(problems)} label value(s) cannot be used:", problems))
    return targets


def check_label_columns(sample_set: SampleSet, heads: Sequence[TaskHead]) -> None:
    """Every column a head reads must exist: a misspelt one would silently mean "unknown"."""
    columns = set(sample_set.columns)
    if not columns:
        columns = {key for sample in sample_set.samples for key in sample.labels}
    problems = [
        f"task {head.name} reads column {column!r}"
        for head in heads
        for column in head.label_columns
        if column not in columns
    ]
    if problems:
        available = ", ".join(sorted(columns)) or "(none)"
        raise DataError(
            list_problems("the data has no such column:", problems) + f"\ncolumns: {available}"
        )


def check_every_task_has_labels(targets: torch.Tensor, heads: Sequence[TaskHead]) -> None:
    """A task without a single known target cannot be trained or evaluated."""
    known = (~torch.isnan(targets)).sum(dim=0).tolist()
    empty = [head.name for head, count in zip(heads, known, strict=True) if count == 0]
    if empty:
        raise DataError(f"no image has a known label for task(s): {', '.join(empty)}")


def check_unique_ids(samples: Sequence[Sample]) -> None:
    """Two samples with one image id would make predictions ambiguous."""
    seen: dict[str, int] = {}
    problems = []
    for row, sample in enumerate(samples, start=1):
        if sample.image_id in seen:
            problems.append(
                f"image id {sample.image_id!r} at rows {seen[sample.image_id]} and {row}"
            )
        else:
            seen[sample.image_id] = row
    if problems:
        raise DataError(list_problems("duplicate image ids:", problems))


def _reference(sample: Sample, column: str) -> float:
    if column not in sample.labels:
        raise DataError(
            f"evaluation.reference_columns names column {column!r}, which the data "
            "source does not provide"
        )
    value = as_number(sample.labels[column])
    return math.nan if value is None else value


class RoiDataset(Dataset):
    """Cached RoIs of some samples, augmented on every access; yields ``(image, index)``."""

    def __init__(self, cache: torch.Tensor, indices: np.ndarray, transform: v2.Transform):
        self.cache = cache
        self.indices = indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[position])
        return self.transform(self.cache[index]), index
