"""Reading images and tables the way every data source needs: image files (PNG, JPEG, TIFF,
BMP, DICOM) as 2-D uint8 grayscale, lesion masks, CSV files with their line numbers, file
paths named in a table, and RoI boxes given as four cells.

Every function raises :class:`~mtlkit.errors.DataError` (or returns what is wrong, for the
per-row ones) naming the file, so that a data source can list every bad row at once.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtlkit.data.dicom_pixels import is_dicom, read_dicom
from mtlkit.data.labels import as_number
from mtlkit.errors import DataError

Box = tuple[int, int, int, int]


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


def read_csv_rows(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
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


def resolve_data_file(text: str, root: Path, allow_outside: bool) -> Path | str:
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


def parse_box(
    row: dict[str, str], columns: list[str] | tuple[str, ...]
) -> tuple[Box | None, str | None]:
    """Four integer box cells as ``(box, None)``, or ``(None, what is wrong)``."""
    values = [as_number(row[c]) for c in columns]
    if any(v is None or not float(v).is_integer() for v in values):
        return None, f"box {', '.join(row[c] or '(empty)' for c in columns)} is not four integers"
    x0, y0, x1, y1 = (int(v) for v in values)
    if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
        return None, f"box ({x0}, {y0}, {x1}, {y1}) needs 0 <= x0 < x1 and 0 <= y0 < y1"
    return (x0, y0, x1, y1), None


def require_columns(path: Path, columns: list[str], options: Any, fields: tuple[str, ...]) -> None:
    """A table's columns must include ``options.image_column`` and the columns the options
    ``fields`` name, but only when the config set them (their defaults may simply be absent
    from a file). Raises DataError naming the missing columns and the file's."""
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
