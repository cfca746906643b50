"""The ``labelimg`` data source: images with Pascal VOC XML boxes, as LabelImg saves them.

LabelImg (the tool Li et al. 2022 drew their RoIs with) writes one XML file per image,
``<annotation><size>..</size><object><name>mass</name><bndbox>..</bndbox></object></annotation>``,
normally beside the image with the same stem (``case12.png`` + ``case12.xml``). Labels and
patient ids come from a CSV file with one row per image; an image's id is its path relative
to the images folder (subfolders included). The RoI box of each image is the bounding box of
its ``<object>``; what happens to images without one, with several, or with objects of other
classes (calipers, text) is set by options. VOC corners are 1-based and inclusive; they
become mtlkit's 0-based, end-exclusive ``(x0, y0, x1, y1)``. Every problem of the labels
file, the image folder and the XML files is collected and reported in one DataError, each
line naming its row, image or XML file.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.parsers import expat

from PIL import Image, UnidentifiedImageError
from pydantic import Field

from mtlkit import (
    DataError,
    OptionsModel,
    Sample,
    SampleSet,
    hookimpl,
    list_problems,
    load_grayscale,
    read_csv_rows,
    require_columns,
)
from mtlkit.files_in import MAX_TABLE_BYTES, InputFileError, read_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CORNERS = ("xmin", "ymin", "xmax", "ymax")

Box = tuple[int, int, int, int]


class LabelImgOptions(OptionsModel):
    images: str = Field(
        description="folder with the images (png, jpg, jpeg, bmp, tif, tiff; any letter case)"
    )
    labels: str = Field(
        description="CSV file, one row per image: the image path relative to images, "
        "optionally a patient id, and the label columns the heads read"
    )
    annotations: str | None = Field(
        None,
        description="folder with the XML files, laid out like images (sub/a.png -> "
        "sub/a.xml); default: the images folder, i.e. each XML beside its image",
    )
    recursive: bool = Field(
        True, description="also read images in subfolders; their ids keep the subfolder"
    )
    image_column: str = Field("image", description="labels column with the image path")
    patient_column: str | None = Field(
        "patient_id",
        description="labels column with the patient id; null or absent: each image its own "
        "patient; an empty cell: that image its own patient",
    )
    unlabelled: Literal["error", "skip"] = Field(
        "error",
        description="an image in the folder without a labels row: error, or skip (leave it out)",
    )
    missing_box: Literal["error", "skip", "whole_image"] = Field(
        "error",
        description="an image without an XML file, or whose XML has no (kept) object: error, "
        "skip (leave it out), or whole_image (the whole image is its box)",
    )
    objects: Literal["error", "largest", "union"] = Field(
        "error",
        description="an XML with several (kept) objects: error, largest (the box of largest "
        "area; the first on ties), or union (the box around all of them)",
    )
    object_names: list[str] | None = Field(
        None,
        min_length=1,
        description="object names to keep (e.g. [mass]), compared ignoring case and "
        "surrounding spaces; other objects are ignored; default: keep every object",
    )


def labelimg_source(options: LabelImgOptions) -> SampleSet:
    """Images with their LabelImg boxes and CSV labels; a DataError lists every problem."""
    images_root = _folder(options.images, "images")
    xml_root = _folder(options.annotations, "annotations") if options.annotations else images_root
    labels_path = Path(options.labels).expanduser()
    if not labels_path.is_file():
        raise DataError(f"labels file not found: {labels_path}")
    rows, columns = read_csv_rows(labels_path)
    require_columns(labels_path, columns, options, ("patient_column",))
    patient_column = options.patient_column if options.patient_column in columns else None
    reserved = {options.image_column, patient_column}

    found = _find_images(images_root, options.recursive)
    if not found:
        where = "" if options.recursive else " (subfolders not read: recursive is false)"
        raise DataError(f"{images_root}: no image files ({', '.join(IMAGE_SUFFIXES)}){where}")

    problems: list[str] = []
    labelled = _join(rows, labels_path.name, options.image_column, found, problems)
    unlabelled = [i for i in found if i not in labelled]
    if options.unlabelled == "error":
        problems += [
            f"image {i}: no row in {labels_path.name} (or set unlabelled: skip)" for i in unlabelled
        ]

    names = {n.strip().casefold() for n in options.object_names} if options.object_names else None
    samples: list[Sample] = []
    without_box = stale = 0
    annotation_of: dict[Path, str] = {}
    for image_id in sorted(labelled):
        image_path = found[image_id]
        boxed = _image_box(image_id, image_path, xml_root, names, options, annotation_of)
        problems += boxed.problems
        stale += boxed.stale
        without_box += boxed.skipped
        if boxed.box is None:
            continue
        box, xml_path = boxed.box, boxed.xml_path
        row = labelled[image_id][1]
        patient = row[patient_column] if patient_column else ""
        samples.append(
            Sample(
                image_id=image_id,
                patient_id=patient or image_id,
                labels={k: v for k, v in row.items() if k not in reserved},
                image=lambda path=image_path: load_grayscale(path),
                box=box,
                files=(image_path, xml_path) if xml_path else (image_path,),
            )
        )
    if problems:
        raise DataError(
            list_problems(f"labelimg {images_root}: {len(problems)} problem(s):", problems)
        )
    notes = [f"{len(samples)} images"]
    if unlabelled:
        notes.append(f"{len(unlabelled)} without a labels row skipped")
    if without_box:
        notes.append(f"{without_box} without a box skipped")
    if stale:
        notes.append(f"{stale} XML <filename> naming another image (ignored)")
    return SampleSet(
        samples,
        description=f"labelimg {images_root} ({'; '.join(notes)})",
        columns=[c for c in columns if c not in reserved],
    )


@dataclass
class _Boxed:
    """One image's box from its annotation (None when skipped or wrong) and what was seen."""

    box: Box | None = None
    xml_path: Path | None = None
    problems: list[str] = field(default_factory=list)
    stale: int = 0  # 1 when the XML's <filename> names another image
    skipped: int = 0  # 1 when it has no box and missing_box is skip


def _image_box(
    image_id: str,
    image_path: Path,
    xml_root: Path,
    names: set[str] | None,
    options: LabelImgOptions,
    annotation_of: dict[Path, str],
) -> _Boxed:
    """The RoI box of one image: from its XML annotation, else per ``missing_box``."""
    try:
        with Image.open(image_path) as image:
            size = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        return _Boxed(problems=[f"image {image_id}: cannot read it ({exc})"])
    xml_path = _annotation(xml_root, image_id)
    read: _Annotation | None = None
    if xml_path is not None:
        if xml_path in annotation_of:
            return _Boxed(
                problems=[
                    f"{_name(xml_path, xml_root)}: annotates both {annotation_of[xml_path]} and "
                    f"{image_id} (images with one stem); rename one"
                ]
            )
        annotation_of[xml_path] = image_id
        read = _read_annotation(xml_path, image_path, size, names, options.objects)
        if read.problems:
            return _Boxed(problems=[f"{_name(xml_path, xml_root)}: {p}" for p in read.problems])
        if read.box is not None:
            return _Boxed(read.box, xml_path, stale=read.stale_filename)
    stale = read.stale_filename if read is not None else 0
    if options.missing_box == "skip":
        return _Boxed(stale=stale, skipped=1)
    if options.missing_box == "error":
        return _Boxed(problems=[_no_box(image_id, xml_path, xml_root, read)], stale=stale)
    return _Boxed((0, 0, size[0], size[1]), xml_path, stale=stale)


def _folder(text: str, what: str) -> Path:
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"{what} folder not found: {path}")
    return path


def _find_images(root: Path, recursive: bool) -> dict[str, Path]:
    """Image files under ``root`` by id (posix path relative to root), hidden files left out.

    Hidden names (``.DS_Store``, macOS ``._case12.png`` forks, ``.ipynb_checkpoints/``)
    are never images of the study.
    """
    candidates = root.rglob("*") if recursive else root.iterdir()
    found = {}
    for path in candidates:
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            found[relative.as_posix()] = path
    return dict(sorted(found.items()))


def _join(
    rows: list[tuple[int, dict[str, str]]],
    file_name: str,
    column: str,
    found: dict[str, Path],
    problems: list[str],
) -> dict[str, tuple[int, dict[str, str]]]:
    """Labels rows by image id; rows naming no image, or an image again, become problems."""
    by_id: dict[str, tuple[int, dict[str, str]]] = {}
    folded = {i.casefold(): i for i in found}
    for number, row in rows:
        where = f"{file_name} row {number}"
        # Spreadsheets made on Windows write sub\a.png; ids are posix paths.
        key = row[column].replace("\\", "/").removeprefix("./")
        if not key:
            problems.append(f"{where}: the {column} cell is empty")
        elif key not in found:
            near = folded.get(key.casefold())
            hint = f" (did you mean {near}?)" if near else ""
            problems.append(f"{where}: image {key} is not in the images folder{hint}")
        elif key in by_id:
            problems.append(
                f"{where}: image {key} is labelled again (first at row {by_id[key][0]})"
            )
        else:
            by_id[key] = (number, row)
    return by_id


def _annotation(root: Path, image_id: str) -> Path | None:
    """The XML file of an image: same relative folder and stem, ``.xml`` or ``.XML``."""
    stem = (root / image_id).with_suffix("")
    for suffix in (".xml", ".XML"):
        path = stem.with_name(stem.name + suffix)
        if path.is_file():
            return path
    return None


def _name(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


class _Annotation:
    """What one XML file gave: a box (None: no kept object), problems, a stale filename."""

    def __init__(self) -> None:
        self.box: Box | None = None
        self.problems: list[str] = []
        self.stale_filename = False
        self.ignored: list[str] = []


def _no_box(image_id: str, xml_path: Path | None, root: Path, read: _Annotation | None) -> str:
    hint = "(or set missing_box: skip or whole_image)"
    if xml_path is None:
        expected = Path(image_id).with_suffix(".xml").as_posix()
        return f"image {image_id}: no XML file {expected} {hint}"
    if read and read.ignored:
        found = ", ".join(read.ignored)
        return f"{_name(xml_path, root)}: no object named in object_names (has {found}) {hint}"
    return f"{_name(xml_path, root)}: no <object> {hint}"


class _Declaration(Exception):
    pass


def _refuse_declaration(*_args: object) -> None:
    raise _Declaration


def _has_declarations(data: bytes) -> bool:
    """Whether the document declares a DOCTYPE or entities (checked before anything expands).

    A DTD can define entities that expand to gigabytes ("billion laughs") or read local
    files; LabelImg never writes one. expat reads the encoding itself (UTF-16 included),
    which a byte search would miss.
    """
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse_declaration
    parser.EntityDeclHandler = _refuse_declaration
    try:
        parser.Parse(data, True)
    except _Declaration:
        return True
    except expat.ExpatError:
        return False  # not well-formed: ElementTree reports where
    return False


def _read_annotation(
    path: Path,
    image_path: Path,
    image_size: tuple[int, int],
    names: set[str] | None,
    mode: str,
) -> _Annotation:
    """The box of one LabelImg file, checked against the image it belongs to."""
    read = _Annotation()
    try:
        data = read_bytes(path, "annotation", MAX_TABLE_BYTES)
    except InputFileError as exc:
        read.problems.append(str(exc))
        return read
    except OSError as exc:
        read.problems.append(f"cannot read it ({exc.strerror})")
        return read
    if _has_declarations(data):
        read.problems.append(
            "contains a DOCTYPE or ENTITY declaration; refused (LabelImg never writes one, "
            "and entities can expand without bound)"
        )
        return read
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        read.problems.append(f"not well-formed XML ({exc})")
        return read
    if root.tag != "annotation":
        read.problems.append(f"not a Pascal VOC file (root element <{root.tag}>, not <annotation>)")
        return read

    # LabelImg copies of a folder keep the old <filename>: note it, never use it.
    filename = (root.findtext("filename") or "").strip()
    read.stale_filename = bool(filename) and filename not in (image_path.name, image_path.stem)

    width, height = image_size
    stated = _stated_size(root.find("size"), read.problems)
    if stated and stated != image_size:
        read.problems.append(
            f"<size> says {stated[0]}x{stated[1]} but {image_path.name} is {width}x{height} "
            "(was the image resized or replaced after annotation?)"
        )
    limit = stated or image_size
    source = "<size>" if stated else "image"

    boxes = []
    for index, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if names is not None and name.casefold() not in names:
            read.ignored.append(name or "(unnamed)")
            continue
        box, problem = _object_box(obj, limit, source)
        if problem:
            read.problems.append(f"object {index} ({name or 'unnamed'}): {problem}")
        else:
            boxes.append(box)
    if read.problems or not boxes:
        return read
    if len(boxes) > 1 and mode == "error":
        read.problems.append(
            f"{len(boxes)} objects; set objects: largest or union, or object_names to keep "
            "only the lesion's class"
        )
    elif mode == "union":
        read.box = (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )
    else:  # the only one, or the largest (max keeps the first of equal areas)
        read.box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    return read


def _stated_size(element: ET.Element | None, problems: list[str]) -> tuple[int, int] | None:
    """The ``<size>`` width and height; None when absent or 0x0 (some exporters write that)."""
    if element is None:
        return None
    texts = [(element.findtext(k) or "").strip() for k in ("width", "height")]
    if not any(texts):
        return None
    values = [_number(t) for t in texts]
    if any(v is None or v < 0 or not v.is_integer() for v in values):
        problems.append(f"<size> width {texts[0]!r}, height {texts[1]!r} are not two integers")
        return None
    width, height = (int(v) for v in values)
    return (width, height) if width or height else None


def _object_box(obj: ET.Element, limit: tuple[int, int], source: str):
    bndbox = obj.find("bndbox")
    if bndbox is None:
        return None, "no <bndbox>"
    texts = {k: (bndbox.findtext(k) or "").strip() for k in CORNERS}
    missing = [k for k in CORNERS if not texts[k]]
    if missing:
        return None, f"<bndbox> lacks {', '.join(missing)}"
    numbers = {k: _number(t) for k, t in texts.items()}
    bad = [f"{k} {texts[k]!r}" for k in CORNERS if numbers[k] is None]
    if bad:
        return None, f"{', '.join(bad)} not a number"
    # LabelImg sometimes writes fractional pixels: round half up.
    xmin, ymin, xmax, ymax = (math.floor(numbers[k] + 0.5) for k in CORNERS)
    empty = [
        f"{axis}max {high} <= {axis}min {low}"
        for axis, low, high in (("x", xmin, xmax), ("y", ymin, ymax))
        if high <= low
    ]
    if empty:
        return None, f"empty box: {', '.join(empty)}"
    width, height = limit
    if xmin < 0 or ymin < 0 or xmax > width or ymax > height:
        return None, (
            f"box ({xmin}, {ymin}, {xmax}, {ymax}) lies outside the {width}x{height} {source}"
        )
    # VOC boxes are 1-based and inclusive (pixel columns xmin..xmax); mtlkit's are 0-based
    # with an exclusive end, so x0 = xmin - 1 and x1 = xmax. LabelImg writes 0 for a box
    # drawn against the left or top edge: that is pixel 0, not -1.
    return (max(xmin - 1, 0), max(ymin - 1, 0), xmax, ymax), None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@hookimpl
def mtl_register_data_sources(registry):
    registry.register("labelimg", labelimg_source, options=LabelImgOptions)
