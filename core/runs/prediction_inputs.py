"""What ``mtl predict`` reads: the images that PATH arguments name, as samples.

A PATH is an image file (PNG, JPEG, TIFF, BMP, DICOM), a folder (searched recursively;
files of other types are ignored), or a manifest ``.csv`` read by the ``manifest`` data
source (its boxes and masks give the RoIs). Nothing is decoded here: an input that cannot
even be listed (a missing file, an unsupported file named explicitly, a broken manifest)
becomes an input with an ``error``, so that it is reported beside the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import read_sample_set, resolve_source
from mtlkit.data.reading import IMAGE_SUFFIXES, is_dicom, load_grayscale
from mtlkit.data.samples import Sample
from mtlkit.errors import MtlError


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
        text = str(given)
        if path.is_dir():
            inputs += [_file_input(file, str(file.relative_to(path))) for file in _images_in(path)]
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


def _images_in(folder: Path) -> list[Path]:
    """The image files under a folder, at any depth, sorted; other files are skipped."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and _is_image_file(p))


def _is_image_file(path: Path) -> bool:
    # A DICOM file often has no extension: its DICM marker says what it is.
    return path.suffix.lower() in IMAGE_SUFFIXES or is_dicom(path)


def _file_input(path: Path, image_id: str) -> PredictionInput:
    sample = Sample(
        image_id=image_id,
        patient_id=image_id,
        labels={},
        image=lambda: load_grayscale(path),
        files=(path,),
        origin=str(path),
    )
    return PredictionInput(image_id, str(path), sample)


def _manifest_inputs(path: Path, host: PluginHost) -> list[PredictionInput]:
    """A manifest's rows, read by the ``manifest`` data source; a manifest it refuses is one
    input whose error lists the bad rows."""
    where = str(path)
    try:
        entry, options, columns = resolve_source(host, {"type": "manifest", "path": where}, where)
        samples = read_sample_set(entry, options, where, columns).samples
    except MtlError as exc:
        return [PredictionInput(where, where, error=str(exc))]
    return [PredictionInput(s.image_id, s.origin or where, s) for s in samples]
