"""What ``mtl predict`` reads: the images that PATH arguments name, as samples.

A PATH is an image file (PNG, JPEG, TIFF, BMP, DICOM), a folder (searched recursively;
files of other types are ignored), or a manifest ``.csv`` read by the ``manifest`` data
source (its boxes and masks give the RoIs). Nothing is decoded here: an input that cannot
even be listed (a missing file, an unsupported file named explicitly, a broken manifest)
becomes an input with an ``error``, so that it is reported beside the others. Ids are made
printable here (:func:`printable`); samples keep the real paths for reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import read_sample_set, resolve_source
from mtlkit.data.reading import IMAGE_SUFFIXES, is_dicom, load_grayscale
from mtlkit.data.samples import Sample
from mtlkit.errors import BadRowsError, MtlError


@dataclass
class PredictionInput:
    """One image to predict: its id (the path as given, relative to a folder, or a
    manifest's image cell), where it came from (a file, or ``manifest.csv row N``), the
    sample that reads it (None where ``error`` says why there is nothing to read)."""

    image_id: str
    source: str
    sample: Sample | None = None
    error: str | None = None


def collect_inputs(paths: Sequence[str | Path], host: PluginHost) -> list[PredictionInput]:
    """Every image the paths name, in the order given (a folder's files sorted)."""
    inputs: list[PredictionInput] = []
    for given in paths:
        path = Path(given).expanduser()
        text = printable(str(given))
        if path.is_dir():
            inputs += _folder_inputs(path)
        elif not path.exists():
            inputs.append(PredictionInput(text, text, error="no such file or folder"))
        elif path.suffix.lower() == ".csv":
            inputs += _manifest_inputs(path, host)
        elif _is_image_file(path):
            inputs.append(_file_input(path, text))
        else:
            inputs.append(
                PredictionInput(
                    text,
                    text,
                    error=f"not an image file mtlkit reads ({', '.join(sorted(IMAGE_SUFFIXES))} "
                    "or DICOM) nor a manifest .csv",
                )
            )
    return inputs


def _folder_inputs(folder: Path) -> list[PredictionInput]:
    """The image files under a folder, at any depth, sorted; other files are skipped, and
    an entry that cannot even be examined (no permission) is an input with an error."""
    inputs = []
    for entry in sorted(folder.rglob("*")):
        name = str(entry.relative_to(folder))
        try:
            if not (entry.is_file() and _is_image_file(entry)):
                continue
        except OSError as exc:
            why = f"cannot examine it: {exc.strerror or exc}"
            inputs.append(PredictionInput(printable(name), printable(str(entry)), error=why))
            continue
        inputs.append(_file_input(entry, name))
    return inputs


def _is_image_file(path: Path) -> bool:
    # A DICOM file often has no extension: its DICM marker says what it is.
    return path.suffix.lower() in IMAGE_SUFFIXES or is_dicom(path)


def printable(text: str) -> str:
    """``text`` that any output can encode: a file name's undecodable bytes (the surrogate
    escapes of ``str(path)``) written as ``\\xff``, so a CSV or heatmap file name never fails
    to write after everything was predicted."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _file_input(path: Path, image_id: str) -> PredictionInput:
    """An image file as an input: named printably, read from its real path."""
    image_id = printable(image_id)
    sample = Sample(
        image_id=image_id,
        patient_id=image_id,
        labels={},
        image=lambda: load_grayscale(path),
        files=(path,),
        origin=str(path),
    )
    return PredictionInput(image_id, printable(str(path)), sample)


def _manifest_inputs(path: Path, host: PluginHost) -> list[PredictionInput]:
    """A manifest's rows, read by the ``manifest`` data source; paths outside its folder
    are accepted (the user names these files explicitly). Each bad row is an input with
    its error, after the good ones; a manifest that cannot be read at all is one input."""
    where = printable(str(path))
    options = {"type": "manifest", "path": str(path), "allow_outside_root": True}
    bad: list[PredictionInput] = []
    try:
        entry, settings, columns = resolve_source(host, options, where)
        samples = read_sample_set(entry, settings, where, columns).samples
    except BadRowsError as exc:
        samples = exc.good.samples if exc.good is not None else []
        for number, problem in exc.problems:
            row = f"{printable(path.name)} row {number}"
            bad.append(PredictionInput(row, row, error=problem))
    except MtlError as exc:
        return [PredictionInput(where, where, error=str(exc))]
    good = [
        PredictionInput(printable(s.image_id), printable(s.origin or where), s) for s in samples
    ]
    return good + bad
