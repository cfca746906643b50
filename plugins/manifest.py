"""The ``manifest`` data source: images listed in a CSV file, one row per image.

Columns: an image path, optionally a patient id, a mask path and a box (x0, y0, x1, y1),
and any label columns heads refer to (``bm``, ``alnm_count``, ...). Paths are relative to
the CSV's folder and may not leave it unless ``allow_outside_root`` is set. Problems are
collected over the whole file and reported together, each with its row number.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from mtlkit import DataError, hookimpl
from mtlkit.config import Strict
from mtlkit.data import Sample, SampleSet
from mtlkit.errors import list_problems
from mtlkit.labels import as_number
from mtlkit.plugins.dicom_pixels import is_dicom, read_dicom

BOX_COLUMNS = ("x0", "y0", "x1", "y1")


class ManifestOptions(Strict):
    path: str = Field(description="the CSV file")
    image_column: str = Field("image", description="column with the image path")
    patient_column: str | None = Field(
        "patient_id", description="column with the patient id; null: each image its own patient"
    )
    mask_column: str | None = Field("mask", description="column with a lesion mask path, if any")
    box_columns: list[str] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="x0, y0, x1, y1 columns of the RoI box; default: x0,y0,x1,y1 when present",
    )
    allow_outside_root: bool = Field(False, description="accept paths outside the CSV's folder")


def manifest_source(options: ManifestOptions) -> SampleSet:
    """Samples from a CSV manifest; raises DataError listing every bad row."""
    path = Path(options.path).expanduser()
    rows, columns = read_rows(path)
    root = path.parent.resolve()
    box_columns = options.box_columns or (BOX_COLUMNS if set(BOX_COLUMNS) <= set(columns) else None)
    check_columns(path, columns, options, ("patient_column", "mask_column", "box_columns"))
    patient_column = options.patient_column if options.patient_column in columns else None
    mask_column = options.mask_column if options.mask_column in columns else None
    reserved = {options.image_column, patient_column, mask_column, *(box_columns or ())}

    samples, problems = [], []
    for number, row in rows:
        where = f"row {number}"
        image = _resolve(row[options.image_column], root, options.allow_outside_root)
        if isinstance(image, str):
            problems.append(f"{where}: image {image}")
            continue
        mask = None
        if mask_column and (row[mask_column] or "").strip():
            mask = _resolve(row[mask_column], root, options.allow_outside_root)
            if isinstance(mask, str):
                problems.append(f"{where}: mask {mask}")
                continue
        box = None
        if box_columns:
            box, problem = parse_box(row, box_columns)
            if problem:
                problems.append(f"{where}: {problem}")
                continue
        image_id = row[options.image_column].strip()
        patient = (row[patient_column] or "").strip() if patient_column else ""
        samples.append(
            Sample(
                image_id=image_id,
                patient_id=patient or image_id,
                labels={k: v for k, v in row.items() if k not in reserved},
                image=lambda image=image: load_grayscale(image),
                mask=(lambda mask=mask: load_mask(mask)) if mask else None,
                box=box,
                files=(image, mask) if mask else (image,),
                origin=f"{path.name} {where}",
            )
        )
    if problems:
        raise DataError(list_problems(f"{path}: {len(problems)} bad row(s):", problems))
    labels = [c for c in columns if c not in reserved]
    return SampleSet(samples, description=f"manifest {path}", columns=labels)


def check_columns(path: Path, columns: list[str], options: Strict, fields: tuple[str, ...]):
    """The image column must exist; the optional ``fields`` only when the config names them
    (their defaults may simply be absent from a CSV). Raises DataError naming the missing."""
    required = [options.image_column]
    for field in fields:
        value = getattr(options, field)
        if field in options.model_fields_set and value:
            required += value if isinstance(value, list) else [value]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; columns: {', '.join(columns)}"
        )


def read_rows(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    """The rows of a CSV file with their line numbers (header = 1), and its columns."""
    try:
        text = path.read_bytes().decode("utf-8-sig")  # line breaks untranslated, for csv
    except FileNotFoundError:
        raise DataError(f"manifest not found: {path}") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (line {line}); save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"cannot read manifest {path}: {exc.strerror}") from None
    # newline="" keeps line breaks inside quoted cells; line_num gives true line numbers
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not columns:
        raise DataError(f"{path}: the file is empty (no header row)")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise DataError(f"{path}: duplicated column(s) {', '.join(duplicated)}")
    reader.fieldnames = columns
    rows = []
    try:
        for row in reader:
            number = reader.line_num  # the file's line (the last one of a multi-line row)
            if None in row:
                raise DataError(f"{path}: row {number} has more cells than the header")
            rows.append((number, {k: (v or "").strip() for k, v in row.items()}))
    except csv.Error as exc:
        raise DataError(
            f"{path}: not a readable CSV file (line {reader.line_num}: {exc})"
        ) from None
    return rows, columns


def _resolve(text: str, root: Path, allow_outside: bool) -> Path | str:
    """The file a manifest cell names, or a string saying what is wrong with it."""
    if not (text or "").strip():
        return "path is empty"
    try:
        path = (root / text.strip()).resolve()
        if not allow_outside and not path.is_relative_to(root):
            return f"{text!r} is outside the manifest's folder (set allow_outside_root to accept)"
        if not path.is_file():
            return f"file not found: {text}"
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte
        return f"{text[:80]!r} is not a usable file name ({type(exc).__name__})"
    return path


def parse_box(row: dict[str, str], columns: list[str] | tuple[str, ...]):
    """Four integer box cells as ``(box, None)``, or ``(None, what is wrong)``."""
    values = [as_number(row[c]) for c in columns]
    if any(v is None or not float(v).is_integer() for v in values):
        return None, f"box {', '.join(row[c] or '(empty)' for c in columns)} is not four integers"
    x0, y0, x1, y1 = (int(v) for v in values)
    if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
        return None, f"box ({x0}, {y0}, {x1}, {y1}) needs 0 <= x0 < x1 and 0 <= y0 < y1"
    return (x0, y0, x1, y1), None


def load_grayscale(path: Path) -> np.ndarray:
    """An image file (PNG, JPEG, TIFF, BMP, single-frame DICOM) as 2-D uint8 grayscale;
    16-bit images are scaled, not clipped."""
    if is_dicom(path):
        return read_dicom(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                pixels = np.asarray(image, dtype=np.float64)
                top = 65535.0 if image.mode.startswith("I;16") else max(pixels.max(), 1.0)
                return np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # a header claiming billions of pixels
        raise DataError(f"image {path} is too large to read safely: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def load_mask(path: Path) -> np.ndarray:
    """A mask file as a boolean array (non-zero = lesion); the scan checks its size."""
    return load_grayscale(path) > 0


@hookimpl
def mtl_register_data_sources(registry):
    registry.register("manifest", manifest_source, options=ManifestOptions)
