"""The ``manifest`` data source: images listed in a CSV file, one row per image.

Columns: an image path, optionally a patient id, a mask path and a box (x0, y0, x1, y1),
and any label columns heads refer to (``bm``, ``alnm_count``, ...). Paths are relative to
the CSV's folder and may not leave it unless ``allow_outside_root`` is set. Problems are
collected over the whole file and reported together, each with its row number.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from mtlkit import (
    BadRowsError,
    OptionsModel,
    Sample,
    SampleSet,
    hookimpl,
    load_grayscale,
    load_mask,
    parse_box,
    read_csv_rows,
    require_columns,
    resolve_data_file,
)

BOX_COLUMNS = ("x0", "y0", "x1", "y1")


class ManifestOptions(OptionsModel):
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
    """Samples from a CSV manifest; a DataError lists every bad row.

    The error is a BadRowsError, which also carries the good rows' samples for a caller
    that keeps them (``mtl predict``)."""
    path = Path(options.path).expanduser()
    rows, columns = read_csv_rows(path)
    root = path.parent.resolve()
    box_columns = options.box_columns or (BOX_COLUMNS if set(BOX_COLUMNS) <= set(columns) else None)
    require_columns(path, columns, options, ("patient_column", "mask_column", "box_columns"))
    patient_column = options.patient_column if options.patient_column in columns else None
    mask_column = options.mask_column if options.mask_column in columns else None
    reserved = {options.image_column, patient_column, mask_column, *(box_columns or ())}

    samples, problems = [], []
    for number, row in rows:
        where = f"row {number}"
        image = resolve_data_file(row[options.image_column], root, options.allow_outside_root)
        if isinstance(image, str):
            problems.append((number, f"image {image}"))
            continue
        mask = None
        if mask_column and (row[mask_column] or "").strip():
            mask = resolve_data_file(row[mask_column], root, options.allow_outside_root)
            if isinstance(mask, str):
                problems.append((number, f"mask {mask}"))
                continue
        box = None
        if box_columns:
            box, problem = parse_box(row, box_columns)
            if problem:
                problems.append((number, problem))
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
    labels = [c for c in columns if c not in reserved]
    good = SampleSet(samples, description=f"manifest {path}", columns=labels)
    if problems:
        raise BadRowsError(f"{path}: {len(problems)} bad row(s):", problems, good)
    return good


@hookimpl
def mtl_register_data_sources(registry):
    registry.register("manifest", manifest_source, options=ManifestOptions)
