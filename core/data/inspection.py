"""From a data source's samples to training data, checking everything on the way.

``inspect_data`` is what ``mtl data check`` shows: every problem (unreadable files, bad
annotations, contradictory or unusable labels, leakage), duplicate images, sizes and label
counts. ``prepare_data`` is the same pass for training: it refuses data with any problem.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mtlkit.components.interfaces import TaskHead
from mtlkit.config.schema import DataConfig, RoiConfig
from mtlkit.data.disk_cache import DiskCache
from mtlkit.data.duplicates import find_near_duplicates, group_duplicates, image_hash
from mtlkit.data.labels import as_number
from mtlkit.data.prepared import PreparedData
from mtlkit.data.roi import Locator
from mtlkit.data.roi_store import ROI_FOLDER
from mtlkit.data.samples import Sample, SampleSet
from mtlkit.data.scan import Scan, scan_samples
from mtlkit.data.split_file import leaks, read_split_file
from mtlkit.data.splits import patient_folds, patient_split, strata_key
from mtlkit.data.targets import (
    build_targets,
    label_differences,
    missing_label_columns,
    repeated_images,
    tasks_without_labels,
)
from mtlkit.errors import DataError, list_problems


@dataclass
class Duplicates:
    """Identical and near-duplicate images found by the scan."""

    exact_pairs: list[tuple[int, int]] = field(default_factory=list)
    near_pairs: list[tuple[int, int, int]] = field(default_factory=list)  # i, j, distance
    cross_patient_pairs: int = 0
    linked_groups: int = 0  # split units made of more than one patient


@dataclass
class DataReport:
    """Everything the data check found; ``prepared`` is None when the data cannot be used."""

    description: str
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duplicates: Duplicates = field(default_factory=Duplicates)
    scan: Scan | None = None
    prepared: PreparedData | None = None
    excluded: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_problems(self) -> None:
        if self.problems:
            raise DataError(
                list_problems(
                    f"{self.description}: {len(self.problems)} problem(s) in the data "
                    "(`mtl data check` lists them with a summary):",
                    self.problems,
                )
            )


Advance = Callable[[], None]


def inspect_data(
    sample_set: SampleSet,
    heads: Sequence[TaskHead],
    data: DataConfig,
    reference_columns: Mapping[str, str],
    *,
    full: bool = True,
    external: str | None = None,
    progress: Callable[[int], Advance] | None = None,
    masks: bool = False,
    locate: Locator | None = None,
) -> DataReport:
    """Check and prepare a data source's samples for training.

    ``full=False`` stops before reading any image when the labels already fail (what a run
    wants); ``full=True`` reads everything so that every problem is listed (the data check).
    ``external`` names an extra test set: all its images go to one split of that name, and
    tasks it has no labels for are warnings (they are not evaluated), not problems.
    ``masks``: crop each image's lesion mask with its RoI (segmentation heads). ``locate``:
    the localiser of ``roi.mode: auto``; with ``roi.train_mode`` the training crops (and
    masks) are cut a second time, that way.
    """
    # data.exclude names images of the training data; an external set is never filtered
    exclude = data.exclude if external is None else ()
    samples, excluded, problems = _apply_exclude(sample_set.samples, exclude)
    description = sample_set.description or "the data"
    report = DataReport(description, samples, problems, excluded=excluded)
    if not samples:
        report.problems.append("the data source returned no images")
        return report
    columns = [c for head in heads for c in head.label_columns]
    report.problems += repeated_images(samples, columns)
    missing = missing_label_columns(sample_set, heads)
    targets, label_problems = build_targets(samples, heads)
    report.problems += label_problems
    unlabelled = tasks_without_labels(targets, heads, sample_set) if not label_problems else []
    if external is None:
        report.problems += missing + unlabelled
    else:
        report.warnings += missing + [f"{p}: it is not evaluated" for p in unlabelled]
        if heads and len(unlabelled) == len(heads):
            report.problems.append(
                list_problems("no image has a known label for any task:", unlabelled)
            )
    references, reference_problems = _references(samples, reference_columns)
    report.problems += reference_problems
    if report.problems and not full:
        return report

    report.scan = scan = _scan(samples, data, progress, masks, locate)
    report.problems += scan.problems
    if scan.cache_failure:
        report.warnings.append(scan.cache_failure)
    if scan.whole_image:
        report.warnings.append(
            list_problems(
                f"the localiser found no lesion in {len(scan.whole_image)} image(s); their "
                "RoI is the whole image:",
                [samples[i].where() for i in scan.whole_image],
            )
        )
    if masks and scan.has_mask is not None and not bool(scan.has_mask.any()):
        no_mask = "no image has a lesion mask, which a segmentation task trains on"
        if external is None:
            report.problems.append(no_mask)
        else:
            report.warnings.append(f"{no_mask}: it is not evaluated")
    training_scan = None
    if external is None and data.roi.for_training() is not data.roi and not scan.problems:
        training_data = data.model_copy(update={"roi": data.roi.for_training()})
        training_scan = _scan(samples, training_data, progress, masks, None, hashes=False)
        report.problems += [f"{p} (roi.train_mode)" for p in training_scan.problems]
        scan.cache_writes.entries += training_scan.cache_writes.entries
    groups = _find_duplicates(report, targets, heads, data)
    if report.problems:
        return report
    if external is None:
        folds = _splits(report, targets, heads, data, groups)
    else:
        folds = [[external] * len(samples)]
    if report.problems:
        return report
    report.prepared = PreparedData(
        samples=samples,
        task_names=[h.name for h in heads],
        targets=targets,
        folds=folds,
        groups=groups,
        cache=scan.rois,
        references=references,
        digests=[f.digest for f in scan.facts],
        warnings=report.warnings,
        cache_writes=scan.cache_writes,
        masks=scan.masks,
        has_mask=scan.has_mask,
        whole_image=list(scan.whole_image),
        train_cache=training_scan.rois if training_scan is not None else None,
        train_masks=training_scan.masks if training_scan is not None else None,
    )
    return report


def prepare_data(
    sample_set: SampleSet,
    heads: Sequence[TaskHead],
    data: DataConfig,
    reference_columns: Mapping[str, str],
    progress: Callable[[int], Advance] | None = None,
    masks: bool = False,
    locate: Locator | None = None,
) -> PreparedData:
    """Training data from a source's samples; raises DataError listing every problem."""
    report = inspect_data(
        sample_set,
        heads,
        data,
        reference_columns,
        full=False,
        progress=progress,
        masks=masks,
        locate=locate,
    )
    report.raise_problems()
    assert report.prepared is not None
    return report.prepared


def prepare_external(
    sample_set: SampleSet,
    heads: Sequence[TaskHead],
    data: DataConfig,
    name: str,
    progress: Callable[[int], Advance] | None = None,
    masks: bool = False,
    locate: Locator | None = None,
) -> PreparedData:
    """An external test set; raises DataError listing every problem."""
    report = inspect_data(
        sample_set,
        heads,
        data,
        {},
        full=False,
        external=name,
        progress=progress,
        masks=masks,
        locate=locate,
    )
    report.raise_problems()
    assert report.prepared is not None
    return report.prepared


def shared_images(training: PreparedData, external: PreparedData) -> list[str]:
    """External images identical to a training-data image: their scores would flatter."""
    seen = dict(zip(training.digests, training.samples, strict=True))
    return [
        f"{sample.where()} is identical to training-data {seen[digest].where()}"
        for digest, sample in zip(external.digests, external.samples, strict=True)
        if digest in seen
    ]


def _apply_exclude(
    samples: list[Sample], exclude: Sequence[str]
) -> tuple[list[Sample], int, list[str]]:
    unwanted = set(exclude)
    ids = {s.image_id for s in samples}
    problems = [f"data.exclude names image {i!r}, which the data does not have" for i in exclude]
    problems = [p for p, i in zip(problems, exclude, strict=True) if i not in ids]
    kept = [s for s in samples if s.image_id not in unwanted]
    return kept, len(samples) - len(kept), problems


def _scan(
    samples: list[Sample],
    data: DataConfig,
    progress,
    masks: bool = False,
    locate: Locator | None = None,
    hashes: bool = True,
) -> Scan:
    hasher, name = (None, "")
    if data.duplicates.detect and hashes:
        settings = data.duplicates.settings()
        hasher = lambda image: image_hash(image, settings)  # noqa: E731
        name = f"{settings.method}/{settings.hash_size}"
    cache = DiskCache(Path(data.cache_dir)) if data.cache_dir else None
    on_disk = data.cache_dir is not None and data.cache_mode == "disk"
    advance = progress(len(samples)) if progress else (lambda: None)
    return scan_samples(
        samples,
        data.roi,
        data.image_size,
        hasher=hasher,
        hasher_name=name,
        cache=cache,
        advance=advance,
        masks=masks,
        locate=locate,
        roi_folder=Path(data.cache_dir) / ROI_FOLDER if on_disk else None,
    )


def _find_duplicates(
    report: DataReport, targets: torch.Tensor, heads: Sequence[TaskHead], data: DataConfig
) -> list[str]:
    """Group identical and near-duplicate images with their patients; returns each image's
    split unit. Identical images with different labels are problems; near-duplicates with
    different labels are warnings (a hash can match two different lesions)."""
    samples, facts = report.samples, report.scan.facts
    found = report.duplicates
    by_digest: dict[str, int] = {}
    for i, fact in enumerate(facts):
        if fact is not None:
            j = by_digest.setdefault(fact.digest, i)
            if j != i:
                found.exact_pairs.append((j, i))
    if data.duplicates.detect:
        hashed = [i for i, f in enumerate(facts) if f is not None]
        pairs = find_near_duplicates(
            [facts[i].phash for i in hashed], data.duplicates.max_distance
        ).tolist()
        exact = set(found.exact_pairs)
        found.near_pairs = [
            (hashed[a], hashed[b], d) for a, b, d in pairs if (hashed[a], hashed[b]) not in exact
        ]
    columns = [c for head in heads for c in head.label_columns]
    for i, j in found.exact_pairs:
        if _targets_conflict(targets, i, j):
            differences = label_differences(samples[i].labels, samples[j].labels, columns)
            report.problems.append(
                f"{samples[i].where()} and {samples[j].where()} are the same image with "
                f"different labels ({differences})"
            )
    for i, j, distance in found.near_pairs:
        if _targets_conflict(targets, i, j):
            differences = label_differences(samples[i].labels, samples[j].labels, columns)
            report.warnings.append(
                f"{samples[i].where()} and {samples[j].where()} look like the same lesion "
                f"(hash distance {distance}) but have different labels ({differences})"
            )

    links = [(i, j) for i, j in found.exact_pairs] + [(i, j) for i, j, _ in found.near_pairs]
    found.cross_patient_pairs = sum(
        samples[i].patient_id != samples[j].patient_id for i, j in links
    )
    groups = split_units([s.patient_id for s in samples], links)
    found.linked_groups = len(
        {g for g, s in zip(groups, samples, strict=True) if g != s.patient_id}
    )
    return groups


def split_units(patient_ids: Sequence[str], links: Sequence[tuple[int, int]]) -> list[str]:
    """Each image's split unit: its patient joined with every patient it shares a duplicate
    image with (connected components). A unit of one patient keeps the patient's id, so a
    data set without duplicates splits exactly as by patient."""
    first_of: dict[str, int] = {}
    same_patient = [(first_of.setdefault(p, i), i) for i, p in enumerate(patient_ids)]
    group = group_duplicates(len(patient_ids), [*same_patient, *links])
    members: dict[int, set[str]] = {}
    for g, patient in zip(group.tolist(), patient_ids, strict=True):
        members.setdefault(g, set()).add(patient)
    names = {g: next(iter(p)) if len(p) == 1 else "+".join(sorted(p)) for g, p in members.items()}
    return [names[g] for g in group.tolist()]


def _targets_conflict(targets: torch.Tensor, i: int, j: int) -> bool:
    a, b = targets[i], targets[j]
    known = ~torch.isnan(a) & ~torch.isnan(b)
    return bool((a[known] != b[known]).any())


def _splits(
    report: DataReport,
    targets: torch.Tensor,
    heads: Sequence[TaskHead],
    data: DataConfig,
    groups: list[str],
) -> list[list[str]]:
    samples = report.samples
    split = data.split
    if split.file:
        try:
            folds = read_split_file(Path(split.file), samples, groups)
        except DataError as exc:
            report.problems.append(str(exc))
            return []
    else:
        names = [h.name for h in heads]
        unknown = [t for t in split.stratify if t not in names]
        if unknown:
            report.problems.append(f"data.split.stratify names unknown task(s) {unknown}")
            return []
        columns = [names.index(t) for t in split.stratify]
        strata = [strata_key(targets[i, columns].tolist()) for i in range(len(samples))]
        try:
            if split.folds:
                folds = patient_folds(
                    groups,
                    strata,
                    folds=split.folds,
                    val_fraction=split.val_fraction,
                    seed=split.seed,
                )
            else:
                folds = [
                    patient_split(
                        groups,
                        strata,
                        test_fraction=split.test_fraction,
                        val_fraction=split.val_fraction,
                        seed=split.seed,
                    )
                ]
        except DataError as exc:
            report.problems.append(str(exc))
            return []
    for number, splits in enumerate(folds, start=1):
        where = f"fold {number}: " if len(folds) > 1 else ""
        report.problems += leaks(samples, splits, groups, where)
        if "train" not in splits:
            report.problems.append(
                f"{where}the split left no patient for training; lower the test/val fractions"
            )
    return folds


def _references(
    samples: Sequence[Sample], reference_columns: Mapping[str, str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    references, problems = {}, []
    for task, column in reference_columns.items():
        if any(column not in s.labels for s in samples):
            problems.append(
                f"evaluation.reference_columns names column {column!r}, which the data "
                "source does not provide"
            )
            continue
        values = [as_number(s.labels[column]) for s in samples]
        references[task] = np.array([math.nan if v is None else v for v in values])
    return references, problems


def roi_for(data: DataConfig, roi: RoiConfig | None) -> DataConfig:
    """``data`` with another RoI setting (external sets may come with boxes, not masks)."""
    return data if roi is None else data.model_copy(update={"roi": roi})
