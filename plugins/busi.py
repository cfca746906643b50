"""The ``busi`` data source: the public BUSI breast-ultrasound set (Al-Dhabyani et al. 2020).

Reads either the original release layout, ``Dataset_BUSI_with_GT/{benign,malignant,normal}/``
with ``benign (1).png``, ``benign (1)_mask.png`` and extra ``_mask_1.png`` files (merged),
or a converted folder with a ``manifest.csv`` (columns ``image, mask, label``). BUSI has no
patient ids; when a ``duplicate_groups.csv`` (columns ``image, group``) lies beside the data,
images of one near-duplicate group share a pseudo patient id, so a patient-level split
keeps them together. Labels: ``bm`` (benign/malignant; unknown for normal images) and
``label`` (benign/malignant/normal).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from pydantic import Field

from mtlkit import (
    DataError,
    OptionsModel,
    Sample,
    SampleSet,
    hookimpl,
    load_grayscale,
    load_mask,
    read_csv_rows,
)

CLASSES = ("benign", "malignant", "normal")
ORIGINAL_NAME = re.compile(r"^(benign|malignant|normal) \((\d+)\)\.png$")


class BusiOptions(OptionsModel):
    root: str = Field(description="Dataset_BUSI_with_GT folder, or a folder with manifest.csv")
    include_normal: bool = Field(False, description="keep normal (lesion-free) images")
    groups: str | None = Field(
        None,
        description="duplicate groups CSV (image, group); default: duplicate_groups.csv "
        "in root when present",
    )


def busi_source(options: BusiOptions) -> SampleSet:
    """BUSI images with masks, BM labels and duplicate-group pseudo patients."""
    root = Path(options.root).expanduser()
    if not root.is_dir():
        raise DataError(f"BUSI folder not found: {root}")
    entries = _converted(root) if (root / "manifest.csv").is_file() else _original(root)
    if not options.include_normal:
        entries = [e for e in entries if e[2] != "normal"]
    groups_file = Path(options.groups) if options.groups else root / "duplicate_groups.csv"
    groups = _groups(groups_file) if options.groups or groups_file.is_file() else {}
    samples = []
    for image_id, image, label, masks in entries:
        group = groups.get(image_id)
        samples.append(
            Sample(
                image_id=image_id,
                patient_id=f"group{group}" if group is not None else image_id,
                labels={"bm": label if label != "normal" else None, "label": label},
                image=lambda image=image: load_grayscale(image),
                mask=lambda masks=masks: _merged_mask(masks),
                files=(image, *masks),
            )
        )
    grouped = "duplicate groups as patients" if groups else "no patient ids"
    return SampleSet(samples, description=f"BUSI {root} ({grouped})", columns=("bm", "label"))


def _converted(root: Path) -> list[tuple[str, Path, str, list[Path]]]:
    entries, problems = [], []
    rows, _ = read_csv_rows(root / "manifest.csv")  # bounded: a regular file of known size
    for number, row in rows:
        label = (row.get("label") or "").strip().lower()
        image, mask = root / (row.get("image") or ""), root / (row.get("mask") or "")
        if label not in CLASSES:
            problems.append(f"row {number}: label {row.get('label')!r} is not one of {CLASSES}")
        elif not image.is_file() or not mask.is_file():
            problems.append(f"row {number}: image or mask file missing")
        else:
            entries.append((row["image"], image, label, [mask]))
    if problems:
        raise DataError(f"{root / 'manifest.csv'}:\n" + "\n".join(f"  {p}" for p in problems))
    return entries


def _original(root: Path) -> list[tuple[str, Path, str, list[Path]]]:
    entries = []
    for label in CLASSES:
        folder = root / label
        if not folder.is_dir():
            continue
        for image in sorted(folder.iterdir()):
            if not ORIGINAL_NAME.match(image.name):
                continue
            masks = sorted(folder.glob(f"{glob_escape(image.stem)}_mask*.png"))
            if not masks:
                raise DataError(f"{image}: no mask file ({image.stem}_mask.png)")
            entries.append((f"{label}/{image.name}", image, label, masks))
    if not entries:
        raise DataError(
            f"{root}: neither a manifest.csv nor benign/malignant/normal folders with BUSI images"
        )
    return entries


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def _merged_mask(paths: list[Path]) -> np.ndarray:
    """The union of a lesion's masks (the original release splits some into _mask_1)."""
    masks = [load_mask(p) for p in paths]
    if any(m.shape != masks[0].shape for m in masks):
        raise DataError(f"masks of different sizes: {', '.join(map(str, paths))}")
    return np.logical_or.reduce(masks)


def _groups(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"duplicate groups file not found: {path}")
    rows, columns = read_csv_rows(path)
    if not {"image", "group"} <= set(columns):
        raise DataError(f"{path}: needs columns image and group")
    return {row["image"]: row["group"] for _, row in rows}


@hookimpl
def mtl_register_data_sources(registry):
    registry.register("busi", busi_source, options=BusiOptions)
