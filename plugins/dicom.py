"""The ``dicom`` data source: ultrasound DICOM files found under a folder, labels from a CSV.

Every file under ``root`` (recursively) that starts like a DICOM file (``DICM`` at byte 128,
so names without an extension work; a ``.dcm`` name is also accepted) and holds an image is
a sample; other DICOM objects without an image (structured reports, ``DICOMDIR``) and
non-DICOM files are passed over. Only headers are read while listing; pixel data is decoded
when the engine asks for an image.

``labels`` names a CSV with one row per file: a column with the file's path relative to
``root`` and the label columns heads read, optionally a patient id, a mask, a box and a
frame. Without a CSV the samples have no labels.

Patients: the CSV's patient column where it has a value, else the DICOM PatientID, else the
file is its own patient. Frames of one file always share a patient, so a patient-level
split never puts two frames of one cine loop on both sides.

Multi-frame files (cine loops): ``frames: middle`` (the default) takes the middle frame,
because a loop is usually recorded while sweeping through the lesion, so the middle frame
is the likeliest to show it; ``first`` takes frame 0, for loops that start on the key
image; ``all`` makes one sample per frame with image id ``path#N``. A CSV ``frame`` column
picks the frame of one file (0-based, as in ``path#N``; DICOM viewers count from 1). The
middle frame of N is frame N // 2. A file's box and mask apply to every frame taken from it.

Files with no CSV row are an error by default (``unlabelled: error``): a path typo or an
export that does not match the label list would otherwise drop images without a word; set
``unlabelled: skip`` when the folder deliberately holds more images than the CSV.
Every bad file and row is reported together.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from mtlkit import (
    DataError,
    OptionsModel,
    Sample,
    SampleSet,
    as_number,
    hookimpl,
    list_problems,
    parse_box,
    read_csv_rows,
    require_columns,
)
from mtlkit import (
    load_mask as load_mask_file,
)
from mtlkit.data.dicom_pixels import (
    HEADER_TAGS,
    MAX_FRAMES,
    MAX_PIXELS,
    check_dicom_size,
    decode_pixels,
    decoder_problem,
    error_reason,
    frame_count,
    has_magic,
    is_dicom,
    read_dicom,
)
from mtlkit.plugins.manifest import BOX_COLUMNS


class DicomOptions(OptionsModel):
    root: str = Field(description="folder searched recursively for DICOM files")
    labels: str | None = Field(
        None, description="CSV with one row per file (path relative to root) and label columns"
    )
    image_column: str = Field("image", description="labels column with the file's path")
    patient_column: str | None = Field(
        "patient_id",
        description="labels column with a patient id, used where it has a value; otherwise the "
        "DICOM PatientID, otherwise each file its own patient",
    )
    mask_column: str | None = Field(
        "mask", description="labels column with a lesion mask (PNG or DICOM) path, if any"
    )
    box_columns: list[str] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="x0, y0, x1, y1 columns of the RoI box; default: x0,y0,x1,y1 when present",
    )
    frame_column: str | None = Field(
        "frame", description="labels column with a 0-based frame number for multi-frame files"
    )
    frames: Literal["first", "middle", "all"] = Field(
        "middle",
        description="frame of a multi-frame file: first, middle, or all (one sample per frame)",
    )
    unlabelled: Literal["error", "skip"] = Field(
        "error", description="DICOM images with no labels row: error, or skip them"
    )

    @model_validator(mode="after")
    def _columns_need_labels(self) -> DicomOptions:
        columns = ("image_column", "patient_column", "mask_column", "box_columns", "frame_column")
        given = [name for name in columns if name in self.model_fields_set]
        if self.labels is None and given:
            raise ValueError(f"{', '.join(given)} only apply with a labels CSV (labels: PATH)")
        if self.labels is None and "unlabelled" in self.model_fields_set:
            raise ValueError("unlabelled only applies with a labels CSV (labels: PATH)")
        return self


@dataclass(frozen=True)
class _Header:
    """What listing needs from one file, read without its pixel data."""

    path: Path
    relative: str
    patient: str
    frames: int
    rows: int
    columns: int


def dicom_source(options: DicomOptions) -> SampleSet:
    """Samples from the DICOM images under ``options.root``; raises DataError listing every
    bad file and row."""
    root = Path(options.root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"DICOM folder not found: {root}")
    headers, others, problems = _scan(root)
    if options.labels is None:
        entries = [_Entry(h, {}) for h in headers.values()]
        columns: list[str] = []
        skipped = 0
    else:
        entries, columns, skipped, row_problems = _join(options, root, headers, others)
        problems += row_problems
    samples: list[Sample] = []
    for entry in entries:
        samples += _samples(entry, options.frames)
    if problems:
        raise DataError(list_problems(f"{root}: {len(problems)} problem(s):", problems))
    if not samples:
        raise DataError(f"{root}: no DICOM images found (searched recursively)")
    cines = sum(e.header.frames > 1 for e in entries)
    notes = [f"{len(entries)} file(s)"]
    if cines:
        notes.append(f"{cines} multi-frame ({options.frames} frame)")
    if skipped:
        notes.append(f"{skipped} unlabelled skipped")
    if others:
        notes.append(f"{len(others)} non-image DICOM object(s) ignored")
    return SampleSet(samples, description=f"dicom {root} ({', '.join(notes)})", columns=columns)


def _scan(root: Path) -> tuple[dict[str, _Header], dict[str, str], list[str]]:
    """Headers of the DICOM images under root by relative path; non-image DICOM objects
    (relative path -> what they are); one problem per unreadable file."""
    from pydicom import dcmread

    headers: dict[str, _Header] = {}
    others: dict[str, str] = {}
    problems: list[str] = []
    for path in _files(root):
        if not is_dicom(path):
            continue
        relative = path.relative_to(root).as_posix()
        magic = has_magic(path)
        try:
            check_dicom_size(path)
            header = dcmread(
                path, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=not magic
            )
        except Exception as exc:  # pydicom raises many types for a bad file
            problems.append(f"{relative}: not a readable DICOM file ({error_reason(exc)})")
            continue
        if "Rows" not in header or "Columns" not in header:
            kind = _sop_class(header)
            # pydicom reads a truncated file without complaint, so an image object without
            # Rows, or a file with no SOP class at all, is broken, not a report to pass over.
            if not magic:
                problems.append(
                    f"{relative}: not a readable DICOM image (no 'DICM' marker at byte 128, "
                    "no Rows/Columns)"
                )
            elif kind and "Image Storage" not in kind:
                others[relative] = kind
            else:
                what = kind or "DICOM file"
                problems.append(f"{relative}: {what} without Rows/Columns (truncated or broken?)")
            continue
        syntax = getattr(header, "file_meta", {}).get("TransferSyntaxUID")
        problem = decoder_problem(syntax) if syntax else "no transfer syntax in its file meta"
        if problem:
            problems.append(f"{relative}: {problem}")
            continue
        try:
            rows, columns = int(header.Rows), int(header.Columns)
        except (TypeError, ValueError):
            problems.append(f"{relative}: Rows/Columns are not numbers")
            continue
        if rows * columns > MAX_PIXELS or frame_count(header) > MAX_FRAMES:
            problems.append(  # from the header: nothing is decoded
                f"{relative}: too large to read safely ({frame_count(header)} frame(s) of "
                f"{columns}x{rows} pixels; at most {MAX_FRAMES} frames of {MAX_PIXELS} pixels)"
            )
            continue
        patient = str(header.get("PatientID") or "").strip()
        headers[relative] = _Header(
            path, relative, patient or relative, frame_count(header), rows, columns
        )
    return headers, others, problems


def _files(root: Path) -> Iterable[Path]:
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file():
                yield path


def _sop_class(header) -> str | None:
    """The name of the file's SOP class (what kind of object it is), if it says."""
    uid = header.get("SOPClassUID") or getattr(header, "file_meta", {}).get(
        "MediaStorageSOPClassUID"
    )
    return getattr(uid, "name", None) or (str(uid) if uid else None)


@dataclass(frozen=True)
class _Entry:
    header: _Header
    labels: dict[str, str]
    patient: str | None = None
    mask: Path | None = None
    box: tuple[int, int, int, int] | None = None
    frame: int | None = None
    origin: str = ""


def _join(options: DicomOptions, root: Path, headers: dict[str, _Header], others: dict[str, str]):
    """The labelled entries, the label columns, how many images were skipped, and problems."""
    path = Path(options.labels).expanduser()
    if not path.is_file():
        raise DataError(f"labels CSV not found: {path}")
    rows, columns = read_csv_rows(path)
    box_columns = options.box_columns or (BOX_COLUMNS if set(BOX_COLUMNS) <= set(columns) else None)
    fields = ("patient_column", "mask_column", "box_columns", "frame_column")
    require_columns(path, columns, options, fields)
    patient_column = options.patient_column if options.patient_column in columns else None
    mask_column = options.mask_column if options.mask_column in columns else None
    frame_column = options.frame_column if options.frame_column in columns else None
    reserved = {options.image_column, patient_column, mask_column, frame_column}
    reserved |= set(box_columns or ())
    reserved.discard(None)

    entries, problems = [], []
    seen: dict[str, int] = {}
    for number, row in rows:
        where = f"{path.name} row {number}"
        relative = _relative(row[options.image_column], root)
        if relative is None:
            problems.append(f"{where}: image path is empty or leaves {root}")
            continue
        if relative in seen:
            problems.append(f"{where}: {relative} is already listed in row {seen[relative]}")
            continue
        seen[relative] = number
        header = headers.get(relative)
        if header is None:
            problems.append(f"{where}: {_why_not_an_image(root, relative, others)}")
            continue
        problem = None
        mask = None
        if mask_column and row[mask_column]:
            mask_relative = _relative(row[mask_column], root)
            mask = root / mask_relative if mask_relative else None
            if mask is None or not mask.is_file():
                problem = f"mask file not found: {row[mask_column]}"
        box = None
        if box_columns and problem is None:
            box, problem = _box(row, box_columns, header)
        frame = None
        if frame_column and row[frame_column] and problem is None:
            frame, problem = _frame(row[frame_column], header)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        patient = row[patient_column] if patient_column else ""
        labels = {k: v for k, v in row.items() if k not in reserved}
        entries.append(_Entry(header, labels, patient or None, mask, box, frame, where))
    unlabelled = sorted(set(headers) - set(seen))
    skipped = 0
    if unlabelled and options.unlabelled == "error":
        problems += [
            f"{relative}: no row in {path.name} (unlabelled: skip leaves such files out)"
            for relative in unlabelled
        ]
    else:
        skipped = len(unlabelled)
    return entries, [c for c in columns if c not in reserved], skipped, problems


def _relative(text: str, root: Path) -> str | None:
    """A CSV path as a posix path relative to root, or None when empty or outside root."""
    text = (text or "").strip().replace("\\", "/")
    if not text:
        return None
    candidate = Path(text)
    if candidate.is_absolute():
        if not candidate.is_relative_to(root):
            return None
        candidate = candidate.relative_to(root)
    # Lexical, not resolve(): the scan lists symlinked files under their own names.
    normal = os.path.normpath(candidate.as_posix())
    if normal in (".", "..") or normal.startswith("../"):
        return None
    return normal


def _why_not_an_image(root: Path, relative: str, others: dict[str, str]) -> str:
    if relative in others:
        return f"{relative} is a DICOM {others[relative]} without an image"
    path = root / relative
    if not path.is_file():
        return f"file not found under the root folder: {relative}"
    if is_dicom(path):
        return f"{relative} cannot be read (see its own line)"
    return f"{relative} is not a DICOM file"


def _box(row: dict[str, str], columns, header: _Header):
    box, problem = parse_box(row, columns)
    if box is None:
        return None, problem
    x0, y0, x1, y1 = box
    if x1 > header.columns or y1 > header.rows:
        return None, (
            f"box ({x0}, {y0}, {x1}, {y1}) leaves the {header.columns}x{header.rows} image"
        )
    return (x0, y0, x1, y1), None


def _frame(text: str, header: _Header):
    value = as_number(text)
    if value is None or not float(value).is_integer():
        return None, f"frame {text!r} is not a whole number"
    frame = int(value)
    if not 0 <= frame < header.frames:
        return None, f"frame {frame} does not exist (frames 0..{header.frames - 1}, 0-based)"
    return frame, None


def _samples(entry: _Entry, frames: str) -> list[Sample]:
    header = entry.header
    patient = entry.patient or header.patient
    # The on-disk RoI cache keys a sample by its files' content and box, not by the frame:
    # frames of one cine loop would share one entry, so they go without the cache.
    files: tuple[Path, ...] = ()
    if header.frames == 1:
        files = (header.path,) + ((entry.mask,) if entry.mask else ())
    if entry.frame is not None:
        chosen = [entry.frame]
    elif header.frames == 1:
        chosen = [0]
    elif frames == "all":
        chosen = list(range(header.frames))
    else:
        chosen = [0 if frames == "first" else header.frames // 2]
    per_frame = frames == "all" and entry.frame is None and header.frames > 1
    mask = entry.mask
    return [
        Sample(
            image_id=f"{header.relative}#{frame}" if per_frame else header.relative,
            patient_id=patient,
            labels=dict(entry.labels),
            image=lambda frame=frame: read_dicom(header.path, frame),
            mask=(lambda: load_mask(mask, header)) if mask else None,
            box=entry.box,
            files=files,
            origin=entry.origin,
        )
        for frame in chosen
    ]


def load_mask(path: Path, header: _Header) -> np.ndarray:
    """A mask (PNG or single-frame DICOM; non-zero = lesion) of the size of its image."""
    if is_dicom(path):
        pixels = decode_pixels(path, None)[0]
        mask = pixels.any(axis=-1) if pixels.ndim == 3 else pixels != 0
    else:
        mask = load_mask_file(path)
    if mask.shape != (header.rows, header.columns):
        raise DataError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{header.path} is {header.columns}x{header.rows}"
        )
    return mask


@hookimpl
def mtl_register_data_sources(registry):
    registry.register("dicom", dicom_source, options=DicomOptions)
