"""Reading images and tables the way every data source needs: image files (PNG, JPEG, TIFF,
BMP, DICOM) as 2-D uint8 grayscale, lesion masks, CSV files with their line numbers, file
paths named in a table, and RoI boxes given as four cells.

Every function raises :class:`~mtlkit.errors.DataError` (or returns what is wrong, for the
per-row ones) naming the file, so that a data source can list every bad row at once.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtlkit.data.dicom_pixels import MAX_PIXELS, decode_pixels, is_dicom, read_dicom
from mtlkit.data.labels import as_number
from mtlkit.errors import DataError
from mtlkit.files_in import (
    MAX_IMAGE_BYTES,
    MAX_TABLE_BYTES,
    InputFileError,
    check_regular,
    read_bytes,
)

Box = tuple[int, int, int, int]
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm"})
"""File name endings of the image formats :func:`load_grayscale` reads (DICOM files are
also recognised without one, by their ``DICM`` marker: :func:`is_dicom`)."""
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def load_grayscale(path: Path) -> np.ndarray:
    """An image file (PNG, JPEG, TIFF, BMP, single-frame DICOM) as 2-D uint8 grayscale;
    16-bit images are scaled, not clipped."""
    if is_dicom(path):
        return read_dicom(path)
    return _read_image(path, _gray)


def load_mask(path: Path) -> np.ndarray:
    """A mask file as a boolean array: non-zero = lesion, at any bit depth (a 16-bit mask
    whose lesion is 1 is not empty); the scan checks its size."""
    if is_dicom(path):
        pixels = decode_pixels(Path(path), None)[0]
        return pixels.any(axis=-1) if pixels.ndim == 3 else pixels != 0
    return _read_image(path, _nonzero)


def _gray(image: Image.Image) -> np.ndarray:
    if image.mode in WIDE_MODES:
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(pixels.max(), 1.0)
        return np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _nonzero(image: Image.Image) -> np.ndarray:
    if image.mode in WIDE_MODES or image.mode in ("L", "1"):
        return np.asarray(image) != 0
    return np.asarray(image.convert("RGB")).any(axis=-1)  # colour and palette masks


def _read_image(path: Path, convert: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """Decode an image file with Pillow, refusing a header that claims more than
    MAX_PIXELS pixels before any pixel is decoded."""
    try:
        check_regular(Path(path), "image", MAX_IMAGE_BYTES)
        with warnings.catch_warnings():
            # the pixel limit below is mtlkit's own; Pillow's warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise DataError(
                        f"image {path} is too large to read safely: {width}x{height} pixels, "
                        f"at most {MAX_PIXELS} are read"
                    )
                image.load()
                return convert(image)
    except (FileNotFoundError, InputFileError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    except Image.DecompressionBombError as exc:  # a header claiming billions of pixels
        raise DataError(f"image {path} is too large to read safely: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def read_csv_rows(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    """The rows of a CSV file with their line numbers (header = 1), and its columns."""
    try:
        data = read_bytes(path, "manifest", MAX_TABLE_BYTES)
        text = data.decode("utf-8-sig")  # line breaks untranslated, for csv
    except FileNotFoundError:
        raise DataError(f"manifest not found: {path}") from None
    except InputFileError as exc:
        raise DataError(str(exc)) from None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (line {line}); save it as UTF-8") from None
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
