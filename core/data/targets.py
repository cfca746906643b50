"""Label checks and targets: every problem is collected, so a user fixes a file in one pass."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mtlkit.components.contracts import target_problem
from mtlkit.components.interfaces import TaskHead
from mtlkit.data.labels import canonical
from mtlkit.data.samples import Sample, SampleSet


def build_targets(
    samples: Sequence[Sample], heads: Sequence[TaskHead]
) -> tuple[torch.Tensor, list[str]]:
    """One target per sample and task (NaN = unknown), and every problem: each value a head
    cannot interpret (its ``ValueError``), and each target that breaks the head's contract
    (not a number, not 0/1 for a binary head, not a class index for a multiclass one, or
    another exception), naming the head, the image and the fix."""
    targets = torch.full((len(samples), len(heads)), math.nan, dtype=torch.float32)
    problems: list[str] = []
    for row, sample in enumerate(samples):
        for col, head in enumerate(heads):
            try:
                value = head.target(sample.labels)
            except ValueError as exc:  # the head's way of saying "this value is bad data"
                problems.append(f"{sample.where()}, task {head.name}: {exc}")
                continue
            except Exception as exc:  # a bug in the head: reported with the rest, not raised
                problems.append(
                    f"{sample.where()}, task {head.name} ({type(head).__name__}): target() "
                    f"raised {type(exc).__name__}: {exc}; a head raises ValueError for a value "
                    "it cannot read: fix the head's target()"
                )
                continue
            problem = target_problem(head, value)
            if problem:
                problems.append(f"{sample.where()}, task {head.name}: {problem}")
            else:
                targets[row, col] = float(value)  # numpy scalars too
    return targets, problems


def data_columns(sample_set: SampleSet) -> set[str]:
    """The columns a sample set has: those it declares, else its samples' label keys."""
    columns = set(sample_set.columns)
    return columns or {key for sample in sample_set.samples for key in sample.labels}


def missing_label_columns(sample_set: SampleSet, heads: Sequence[TaskHead]) -> list[str]:
    """Columns heads read that the data lacks: a misspelt one would silently mean "unknown"."""
    columns = data_columns(sample_set)
    return [
        f"task {head.name} reads column {column!r}, which the data does not have "
        f"(columns: {', '.join(sorted(columns)) or 'none'})"
        for head in heads
        for column in head.label_columns
        if column not in columns
    ]


def tasks_without_labels(
    targets: torch.Tensor, heads: Sequence[TaskHead], sample_set: SampleSet | None = None
) -> list[str]:
    """A task without a single known target can be neither trained nor evaluated; the
    message names the columns the head read and those the data has."""
    known = (~torch.isnan(targets)).sum(dim=0).tolist()
    columns = ", ".join(sorted(data_columns(sample_set))) if sample_set is not None else ""
    return [
        f"no image has a known label for task {head.name} (it reads column(s) "
        f"{', '.join(map(repr, head.label_columns))}; the data has columns: {columns or 'none'}; "
        f"a label stored under another name is mapped by the data source's columns option, "
        f"e.g. columns: {{{head.label_columns[0] if head.label_columns else head.name}: label}})"
        for head, count in zip(heads, known, strict=True)
        if count == 0
    ]


def repeated_images(samples: Sequence[Sample], columns: Sequence[str]) -> list[str]:
    """An image listed twice: a duplicate row, or a contradiction when the label ``columns``
    (those the heads read) differ."""
    first: dict[str, Sample] = {}
    problems = []
    for sample in samples:
        earlier = first.setdefault(sample.image_id, sample)
        if earlier is sample:
            continue
        where = f"image {sample.image_id!r} is listed twice"
        if earlier.origin and sample.origin:
            where += f" ({earlier.origin} and {sample.origin})"
        differences = label_differences(earlier.labels, sample.labels, columns)
        if differences:
            problems.append(f"{where} with different labels: {differences}")
        else:
            problems.append(f"{where}: a duplicate row")
    return problems


def label_differences(a: dict, b: dict, columns: Sequence[str]) -> str:
    """``bm: 'benign' vs 'malignant'; ...`` for the columns where two label sets disagree."""
    parts = [
        f"{column}: {a.get(column)!r} vs {b.get(column)!r}"
        for column in dict.fromkeys(columns)
        if canonical(a.get(column)) != canonical(b.get(column))
    ]
    return "; ".join(parts)
