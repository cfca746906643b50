"""Samples turned into what training needs: targets, splits and cached RoIs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .config import DataConfig
from .data import Sample, SampleSet
from .errors import DataError
from .labels import as_number
from .preprocess import build_cache
from .splits import SPLITS, patient_split, strata_key
from .tasks import TaskHead

MAX_LISTED = 50  # rows listed in one error message; the count says how many more there were


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
        raise DataError(_listing(f"{len(problems)} label value(s) cannot be used:", problems))
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
            _listing("the data has no such column:", problems) + f"\ncolumns: {available}"
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
        raise DataError(_listing("duplicate image ids:", problems))


def _listing(title: str, problems: list[str]) -> str:
    lines = [title, *(f"  {p}" for p in problems[:MAX_LISTED])]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(lines)


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
