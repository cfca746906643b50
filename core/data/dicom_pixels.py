"""Pixels of ultrasound DICOM files as 8-bit grayscale, with pydicom.

Monochrome (MONOCHROME1 inverted), RGB, YBR_FULL(_422) and palette colour images, single-
and multi-frame; values wider than 8 bits are scaled by BitsStored, not clipped. Rescale and
window tags are not applied (rare in ultrasound). A file that cannot be decoded here (a
compressed transfer syntax without an installed decoder) is a DataError naming the syntax
and the package that would decode it.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from mtlkit.errors import DataError
from mtlkit.files_in import MAX_IMAGE_BYTES, InputFileError, check_regular

MAX_PIXELS = 64 * 2**20
"""Pixels of one image (one frame), checked from the header before any pixel is decoded, for
every format: an 8192 x 8192 image is accepted, a 1.5 MB file declaring 40000 x 40000 not."""

MAX_INFLATED_BYTES = 512 * 2**20
"""Bytes a deflated DICOM file may inflate to (the whole data set is deflated, so pydicom
would inflate it in memory before any tag can be read)."""

MAX_FRAMES = 10_000
"""Frames of one DICOM cine loop (each can become a sample with ``frames: all``)."""

DEFLATED = "1.2.840.10008.1.2.1.99"

MAGIC_OFFSET = 128
MAGIC = b"DICM"
HEADER_TAGS = [
    "PatientID",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "SOPClassUID",
]
# ITU-R BT.601 luma, the weights Pillow's convert("L") uses.
LUMA = np.array([299, 587, 114], dtype=np.float64) / 1000


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file that looks like DICOM: ``DICM`` at byte 128, or a .dcm name."""
    path = Path(path)
    return (path.suffix.lower() == ".dcm" and path.is_file()) or has_magic(path)


def read_dicom(path: str | os.PathLike[str], frame: int | None = None) -> np.ndarray:
    """One frame of a DICOM image as a 2-D uint8 grayscale array.

    ``frame`` (0-based) is required for multi-frame files and may be 0 for single-frame ones.
    Stored values are scaled to 0..255 by BitsStored (not clipped); MONOCHROME1 is inverted;
    RGB, YBR_FULL, YBR_FULL_422 and PALETTE COLOR become gray by ITU-R 601 luma, as Pillow
    does. Rescale and window tags are not applied: ultrasound rarely has them, and a linear
    rescale changes nothing once the stored range is mapped to 0..255. Raises DataError
    naming the file and the problem.
    """
    pixels, photometric, bits, signed, dataset = decode_pixels(Path(path), frame)
    if photometric == "PALETTE COLOR":
        return _luma(_palette_rgb(pixels, dataset, Path(path)))
    if pixels.ndim == 3:
        return _luma(_to_8_bit(pixels, bits, signed))
    gray = _to_8_bit(pixels, bits, signed)
    return 255 - gray if photometric == "MONOCHROME1" else gray


def decode_pixels(path: Path, frame: int | None):
    """The stored values of one frame, RGB for colour images, with how to interpret them."""
    from pydicom.pixels import convert_color_space, get_decoder

    dataset = _read_dataset(path)
    if "PixelData" not in dataset:
        kind = "float pixel data (not supported)" if _has_float_pixels(dataset) else "no image"
        raise DataError(f"DICOM {path}: {kind}; it holds no pixel data")
    frames = frame_count(dataset)
    if frame is None and frames > 1:
        raise DataError(
            f"DICOM {path}: {frames} frames; choose one (frame=0..{frames - 1}, or the dicom "
            "source's frames: first | middle | all)"
        )
    index = frame or 0
    if not 0 <= index < frames:
        raise DataError(f"DICOM {path}: frame {index} does not exist (frames 0..{frames - 1})")
    _check_pixel_count(path, dataset)
    syntax = dataset.file_meta.TransferSyntaxUID
    problem = decoder_problem(syntax)
    if problem:
        raise DataError(f"DICOM {path}: {problem}")
    try:
        pixels, meta = get_decoder(syntax).as_array(dataset, index=index)
    except Exception as exc:  # any decoder failure is a bad file, not a bug
        raise DataError(
            f"DICOM {path}: cannot decode frame {index} ({syntax.name}): {exc}"
        ) from None
    photometric = str(meta.get("photometric_interpretation", ""))
    samples = int(meta.get("samples_per_pixel", 1))
    if samples == 3 and photometric in ("YBR_FULL", "YBR_FULL_422") and pixels.dtype == np.uint8:
        # pydicom converts these itself; this is for decoders that leave them as they are.
        pixels = convert_color_space(pixels, "YBR_FULL", "RGB")
        photometric = "RGB"
    supported = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR") if samples == 1 else ("RGB",)
    if samples not in (1, 3) or photometric not in supported:
        raise DataError(
            f"DICOM {path}: photometric interpretation {photometric or '(none)'} with "
            f"{samples} sample(s) per pixel is not supported"
        )
    bits = int(meta.get("bits_stored") or dataset.get("BitsStored") or 8)
    signed = int(meta.get("pixel_representation") or 0) == 1
    return pixels, photometric, bits, signed, dataset


@functools.lru_cache(maxsize=1)
def _cached_dataset(path: str, mtime_ns: int, size: int):
    # One file kept: the frames of a cine loop are read one after another, and re-reading
    # the whole file for each frame would read it once per frame.
    from pydicom import dcmread

    try:
        return dcmread(path, force=not has_magic(Path(path)))
    except Exception as exc:  # pydicom raises many types for a bad file
        raise DataError(f"DICOM {path}: not a readable DICOM file ({error_reason(exc)})") from None


def _check_pixel_count(path: Path, dataset) -> None:
    """Refuse a header declaring more than MAX_PIXELS pixels per frame (or frames whose
    decoded size exceeds what an image file may hold), before decoding."""
    try:
        rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
        samples = int(dataset.get("SamplesPerPixel") or 1)
        bits = int(dataset.get("BitsAllocated") or 8)
    except (TypeError, ValueError):
        raise DataError(f"DICOM {path}: Rows, Columns or SamplesPerPixel is not a number") from None
    if rows * columns > MAX_PIXELS:
        raise DataError(
            f"DICOM {path} is too large to read safely: {columns}x{rows} pixels, at most "
            f"{MAX_PIXELS} are read"
        )
    decoded = rows * columns * samples * max(1, bits // 8) * frame_count(dataset)
    if decoded > 4 * MAX_IMAGE_BYTES:
        raise DataError(
            f"DICOM {path} is too large to read safely: {frame_count(dataset)} frames of "
            f"{columns}x{rows} pixels"
        )


def _check_inflated_size(path: Path) -> None:
    """For the deflated transfer syntax, inflate the data set in pieces (without keeping
    them) and refuse it when it grows beyond MAX_INFLATED_BYTES."""
    try:
        with path.open("rb") as handle:
            head = handle.read(MAGIC_OFFSET + 4 + 12)
            if len(head) < MAGIC_OFFSET + 16 or head[MAGIC_OFFSET + 4 : MAGIC_OFFSET + 8] != (
                b"\x02\x00\x00\x00"  # (0002,0000) group length, explicit VR little endian
            ):
                return
            group_length = struct.unpack("<I", head[-4:])[0]
            meta = handle.read(min(group_length, 1 << 16))
            if DEFLATED.encode() not in meta:
                return
            handle.seek(MAGIC_OFFSET + 16 + group_length)
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            total = 0
            while chunk := handle.read(1 << 16):
                data = inflater.decompress(chunk, 1 << 22)
                while True:
                    total += len(data)
                    if total > MAX_INFLATED_BYTES:
                        raise DataError(
                            f"DICOM {path} is too large to read safely: its deflated data set "
                            f"inflates to more than {MAX_INFLATED_BYTES} bytes"
                        )
                    if not inflater.unconsumed_tail:
                        break
                    data = inflater.decompress(inflater.unconsumed_tail, 1 << 22)
                if inflater.eof:
                    return
    except (OSError, zlib.error):
        return  # not readable as deflate: pydicom reports the broken file


def check_dicom_size(path: Path) -> None:
    """Refuse, before pydicom reads it, a DICOM file that is not a regular file, is larger
    than an image file may be, or whose deflated data set inflates beyond the bound."""
    try:
        check_regular(path, "DICOM", MAX_IMAGE_BYTES)
    except FileNotFoundError as exc:
        raise DataError(f"cannot read DICOM {path}: {exc.strerror}") from None
    except InputFileError as exc:
        raise DataError(str(exc)) from None
    _check_inflated_size(path)


def _read_dataset(path: Path):
    check_dicom_size(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"cannot read DICOM {path}: {exc.strerror}") from None
    if not has_magic(path) and path.suffix.lower() != ".dcm":
        raise DataError(f"{path}: not a DICOM file (no 'DICM' marker at byte 128)")
    dataset = _cached_dataset(str(path), stat.st_mtime_ns, stat.st_size)
    if "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
        raise DataError(f"DICOM {path}: no transfer syntax in its file meta information")
    return dataset


def decoder_problem(syntax) -> str | None:
    """Why pixel data in transfer syntax ``syntax`` cannot be decoded here, or None if it can."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID, MPEGTransferSyntaxes

    syntax = UID(str(syntax))
    name = f"transfer syntax {syntax.name}" + (f" ({syntax})" if syntax.name != syntax else "")
    if syntax in MPEGTransferSyntaxes or syntax.name.startswith("HEVC"):
        return f"{name} is video; export the frames as images (e.g. with ffmpeg) first"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"{name} has no decoder in pydicom; convert the file to uncompressed DICOM first"
    if not decoder.is_available:
        needs = "; or ".join(decoder.missing_dependencies) or "a decoding package"
        return f"{name} needs a decoder that is not installed: {needs}"
    return None


def has_magic(path: Path) -> bool:
    """Whether the file has the DICOM preamble's ``DICM`` marker at byte 128."""
    try:
        if not path.is_file():  # a FIFO would block the open
            return False
        with path.open("rb") as handle:
            handle.seek(MAGIC_OFFSET)
            return handle.read(len(MAGIC)) == MAGIC
    except (OSError, ValueError):
        return False


def _has_float_pixels(dataset) -> bool:
    return "FloatPixelData" in dataset or "DoubleFloatPixelData" in dataset


def frame_count(dataset) -> int:
    try:
        return max(1, int(dataset.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def error_reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _to_8_bit(pixels: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Stored values of ``bits`` bits mapped linearly onto 0..255."""
    if bits == 8 and pixels.dtype == np.uint8:
        return pixels
    top = float(2**bits - 1)
    values = pixels.astype(np.float64)
    if signed:
        values += 2 ** (bits - 1)
    return np.clip(np.floor(values / top * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(rgb.astype(np.float64) @ LUMA + 0.5), 0, 255).astype(np.uint8)


def _palette_rgb(pixels: np.ndarray, dataset, path: Path) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    try:
        rgb = apply_color_lut(pixels, dataset)
        bits = int(dataset.RedPaletteColorLookupTableDescriptor[2])
    except Exception as exc:  # a broken palette is a bad file
        reason = error_reason(exc)
        raise DataError(f"DICOM {path}: cannot apply its colour palette ({reason})") from None
    return _to_8_bit(rgb, 16 if bits > 8 else 8, False)


# --- the data source --------------------------------------------------------------------
