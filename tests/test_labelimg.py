"""The ``labelimg`` data source: images + Pascal VOC XML boxes + a labels CSV."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_raw
from PIL import Image

from mtlkit import ConfigError, DataError, load_config, run
from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import resolve_components
from mtlkit.plugins.labelimg import LabelImgOptions, labelimg_source

CORNERS = ("xmin", "ymin", "xmax", "ymax")
MASS = ("mass", 11, 6, 20, 15)  # VOC pixels 11..20 x 6..15 = mtlkit (10, 5, 20, 15)


def voc_xml(objects=(MASS,), filename="img.png", size=(40, 30)) -> str:
    """A LabelImg-style file; each object is (name, xmin, ymin, xmax, ymax), None = left out."""
    parts = ["<annotation>", "<folder>img</folder>", f"<filename>{filename}</filename>"]
    if size:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height>")
        parts.append("<depth>1</depth></size>")
    for name, *corners in objects:
        box = "".join(
            f"<{k}>{v}</{k}>" for k, v in zip(CORNERS, corners, strict=True) if v is not None
        )
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox>{box}</bndbox></object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts)


def case(folder, name, objects=(MASS,), size=(40, 30), xml_size="same", xml=True, pixels=None):
    """Write image ``folder/name`` and, unless xml is False, its XML beside it."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels is None:
        Image.new("L", size, 60).save(path)
    else:
        Image.fromarray(pixels).save(path)
    if xml:
        text = voc_xml(objects, path.name, size if xml_size == "same" else xml_size)
        path.with_suffix(".xml").write_text(text, encoding="utf-8")
    return name


def write_csv(path, header, rows):
    lines = [",".join(header)] + [",".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def labels_for(tmp_path, names, header=("image", "bm")):
    return write_csv(tmp_path / "labels.csv", header, [[n, "benign"] for n in names])


def source(tmp_path, **options):
    options.setdefault("images", str(tmp_path / "img"))
    options.setdefault("labels", str(tmp_path / "labels.csv"))
    return labelimg_source(LabelImgOptions(**options))


def error_of(tmp_path, **options) -> str:
    with pytest.raises(DataError) as info:
        source(tmp_path, **options)
    return str(info.value)


# --- boxes -----------------------------------------------------------------------------------


def test_voc_boxes_become_zero_based_with_an_exclusive_end(tmp_path):
    pixels = np.zeros((30, 40), dtype=np.uint8)
    pixels[5:15, 10:20] = 255  # 0-based rows 5..14, columns 10..19 = VOC 6..15, 11..20
    case(tmp_path / "img", "a.png", pixels=pixels)
    labels_for(tmp_path, ["a.png"])
    (sample,) = source(tmp_path).samples
    assert sample.box == (10, 5, 20, 15)
    x0, y0, x1, y1 = sample.box
    image = sample.image()
    assert image[y0:y1, x0:x1].min() == 255  # the box covers exactly the drawn pixels
    assert (image > 0).sum() == (x1 - x0) * (y1 - y0) == 100


def test_floats_are_rounded_and_a_zero_edge_is_pixel_zero(tmp_path):
    case(tmp_path / "img", "a.png", objects=[("mass", "0", "0.4", "39.5", "30")])
    case(tmp_path / "img", "b.png", objects=[("mass", "1", "1", "40.0", "29.4")])
    labels_for(tmp_path, ["a.png", "b.png"])
    a, b = source(tmp_path).samples
    assert a.box == (0, 0, 40, 30)
    assert b.box == (0, 0, 40, 29)


# --- labels, patients, files -----------------------------------------------------------------


def test_labels_patients_and_files_are_joined_by_image_path(tmp_path):
    img = tmp_path / "img"
    case(img, "p1/a.png")
    case(img, "p1/b.png", objects=[("mass", 2, 3, 12, 13)])
    case(img, "p2/c.jpg")
    write_csv(
        tmp_path / "labels.csv",
        ["image", "patient_id", "bm", "alnm_count"],
        [
            ["p1/a.png", "P1", "malignant", 2],
            ["p1\\b.png", "P1", "benign", 0],
            ["p2/c.jpg", "", "", ""],
        ],
    )
    sample_set = source(tmp_path)
    a, b, c = sample_set.samples
    assert [s.image_id for s in sample_set.samples] == ["p1/a.png", "p1/b.png", "p2/c.jpg"]
    assert [s.patient_id for s in sample_set.samples] == ["P1", "P1", "p2/c.jpg"]
    assert a.labels == {"bm": "malignant", "alnm_count": "2"}
    assert c.labels == {"bm": "", "alnm_count": ""}
    assert list(sample_set.columns) == ["bm", "alnm_count"]
    assert b.box == (1, 2, 12, 13)
    assert a.files == (img / "p1" / "a.png", img / "p1" / "a.xml")
    assert c.image().shape == (30, 40) and c.image().dtype == np.uint8
    assert "3 images" in sample_set.description


def test_column_names_are_options_and_a_named_absent_column_is_an_error(tmp_path):
    case(tmp_path / "img", "a.png")
    write_csv(tmp_path / "labels.csv", ["file", "mrn", "bm"], [["a.png", "123", "benign"]])
    (sample,) = source(tmp_path, image_column="file", patient_column="mrn").samples
    assert sample.patient_id == "123" and sample.labels == {"bm": "benign"}
    # the default patient_id column may be absent: each image is its own patient
    (sample,) = source(tmp_path, image_column="file").samples
    assert sample.patient_id == "a.png" and sample.labels == {"mrn": "123", "bm": "benign"}
    message = error_of(tmp_path, image_column="file", patient_column="patient")
    assert "missing column(s) patient" in message
    assert "missing column(s) image" in error_of(tmp_path)


def test_label_rows_and_images_that_do_not_match_are_listed_together(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        case(tmp_path / "img", name)
    write_csv(
        tmp_path / "labels.csv",
        ["image", "bm"],
        [["a.png", 1], ["missing.png", 0], ["", 1], ["a.png", 0], ["B.png", 1]],
    )
    message = error_of(tmp_path)
    assert "6 problem(s)" in message
    assert "labels.csv row 3: image missing.png is not in the images folder\n" in message
    assert "labels.csv row 4: the image cell is empty" in message
    assert "labels.csv row 5: image a.png is labelled again (first at row 2)" in message
    assert (
        "labels.csv row 6: image B.png is not in the images folder (did you mean b.png?)" in message
    )
    assert "image b.png: no row in labels.csv" in message
    assert "image c.png: no row in labels.csv" in message


def test_unlabelled_images_can_be_skipped(tmp_path):
    for name in ("a.png", "b.png", "sub/c.png"):
        case(tmp_path / "img", name)
    labels_for(tmp_path, ["b.png"])
    sample_set = source(tmp_path, unlabelled="skip")
    assert [s.image_id for s in sample_set.samples] == ["b.png"]
    assert "2 without a labels row skipped" in sample_set.description


def test_subfolders_hidden_files_and_a_separate_annotation_folder(tmp_path):
    img, ann = tmp_path / "img", tmp_path / "ann"
    case(img, "b.png", xml=False)
    case(img, "sub/a.png", xml=False)
    case(img, ".ipynb_checkpoints/a.png", xml=False)
    case(img, "._b.png", xml=False)
    (ann / "sub").mkdir(parents=True)
    (ann / "b.xml").write_text(voc_xml([("mass", 1, 1, 5, 5)], "b.png"), encoding="utf-8")
    (ann / "sub" / "a.XML").write_text(voc_xml([MASS], "a.png"), encoding="utf-8")
    labels_for(tmp_path, ["b.png", "sub/a.png"])
    b, a = source(tmp_path, annotations=str(ann)).samples
    assert (a.image_id, a.box, a.files[1]) == ("sub/a.png", (10, 5, 20, 15), ann / "sub" / "a.XML")
    assert (b.image_id, b.box) == ("b.png", (0, 0, 5, 5))
    assert "sub/a.png is not in the images folder" in error_of(
        tmp_path, annotations=str(ann), recursive=False
    )
    labels_for(tmp_path, ["b.png"])
    flat = source(tmp_path, annotations=str(ann), recursive=False)
    assert [s.image_id for s in flat.samples] == ["b.png"]


# --- objects ---------------------------------------------------------------------------------

SMALL = ("mass", 11, 6, 20, 15)  # 10 x 10 -> (10, 5, 20, 15)
LARGE = ("mass", 21, 11, 40, 30)  # 20 x 20 -> (20, 10, 40, 30)


def test_several_objects_error_largest_or_union(tmp_path):
    case(tmp_path / "img", "one.png", objects=[SMALL, LARGE])
    case(tmp_path / "img", "two.png", objects=[LARGE, SMALL, SMALL])
    case(tmp_path / "img", "tie.png", objects=[SMALL, ("mass", 1, 1, 10, 10)])
    labels_for(tmp_path, ["one.png", "two.png", "tie.png"])
    message = error_of(tmp_path)
    assert "3 problem(s)" in message
    assert "one.xml: 2 objects; set objects: largest or union" in message
    assert "two.xml: 3 objects" in message and "tie.xml: 2 objects" in message
    one, tie, two = source(tmp_path, objects="largest").samples
    assert one.box == two.box == (20, 10, 40, 30)
    assert tie.box == (10, 5, 20, 15)  # equal areas: the first in the file
    one, tie, two = source(tmp_path, objects="union").samples
    assert one.box == two.box == (10, 5, 40, 30)
    assert tie.box == (0, 0, 20, 15)


def test_object_names_keep_the_lesion_and_ignore_calipers(tmp_path):
    calipers = [("caliper", 2, 2, 4, 4), ("Mass ", 11, 6, 20, 15), ("caliper", "left", 1, 2, 3)]
    case(tmp_path / "img", "a.png", objects=calipers)
    case(tmp_path / "img", "b.png", objects=[("caliper", 2, 2, 4, 4)])
    labels_for(tmp_path, ["a.png", "b.png"])
    message = error_of(tmp_path, object_names=["mass"])
    assert "1 problem(s)" in message  # the caliper with a bad xmin is not checked
    assert "b.xml: no object named in object_names (has caliper)" in message
    a, b = source(tmp_path, object_names=["mass"], missing_box="whole_image").samples
    assert a.box == (10, 5, 20, 15) and b.box == (0, 0, 40, 30)
    assert "a.xml: object 3 (caliper): xmin 'left' not a number" in error_of(tmp_path)


def test_images_without_a_box_error_skip_or_use_the_whole_image(tmp_path):
    img = tmp_path / "img"
    case(img, "a.png")
    case(img, "b.png", xml=False)
    case(img, "c.png", objects=[], size=(20, 10))
    labels_for(tmp_path, ["a.png", "b.png", "c.png"])
    message = error_of(tmp_path)
    assert "2 problem(s)" in message
    assert "image b.png: no XML file b.xml (or set missing_box: skip or whole_image)" in message
    assert "c.xml: no <object>" in message
    sample_set = source(tmp_path, missing_box="skip")
    assert [s.image_id for s in sample_set.samples] == ["a.png"]
    assert "2 without a box skipped" in sample_set.description
    a, b, c = source(tmp_path, missing_box="whole_image").samples
    assert (a.box, b.box, c.box) == ((10, 5, 20, 15), (0, 0, 40, 30), (0, 0, 20, 10))
    assert b.files == (img / "b.png",) and c.files == (img / "c.png", img / "c.xml")


# --- bad files -------------------------------------------------------------------------------


def test_every_bad_annotation_is_listed_with_its_file(tmp_path):
    img = tmp_path / "img"
    names = ["good.png", "broken.png", "lacks.png", "text.png", "flat.png", "outside.png"]
    names += ["resized.png", "notvoc.png", "nan.png", "nobox.png", "twice.png", "twice.jpg"]
    names += ["unreadable.png", "point.png"]
    case(img, "good.png")
    case(img, "broken.png")
    (img / "broken.xml").write_text("<annotation><object>\n</annotation>", encoding="utf-8")
    case(img, "lacks.png", objects=[("mass", 11, 6, 20, None)])
    case(img, "text.png", objects=[("mass", "left", 6, "20px", 15)])
    case(img, "flat.png", objects=[("mass", 20, 6, 11, 15)])
    case(img, "outside.png", objects=[("mass", 11, 6, 41, 15)])
    case(img, "point.png", objects=[("mass", 11, 6, 20, 6)])  # a click, not a drag
    case(img, "resized.png", xml_size=(80, 60))
    case(img, "notvoc.png")
    (img / "notvoc.xml").write_text("<labels><box/></labels>", encoding="utf-8")
    case(img, "nan.png", objects=[("mass", "nan", 6, 20, 15)])
    case(img, "nobox.png")
    (img / "nobox.xml").write_text(
        "<annotation><object><name>mass</name></object></annotation>", encoding="utf-8"
    )
    case(img, "twice.png")
    case(img, "twice.jpg", xml=False)
    case(img, "unreadable.png")
    (img / "unreadable.png").write_bytes(b"not an image")
    labels_for(tmp_path, names)
    message = error_of(tmp_path)
    lines = message.splitlines()[1:]
    expected = [
        "broken.xml: not well-formed XML (mismatched tag: line 2, column 2)",
        "flat.xml: object 1 (mass): empty box: xmax 11 <= xmin 20",
        "lacks.xml: object 1 (mass): <bndbox> lacks ymax",
        "nan.xml: object 1 (mass): xmin 'nan' not a number",
        "nobox.xml: object 1 (mass): no <bndbox>",
        "notvoc.xml: not a Pascal VOC file (root element <labels>, not <annotation>)",
        "outside.xml: object 1 (mass): box (11, 6, 41, 15) lies outside the 40x30 <size>",
        "point.xml: object 1 (mass): empty box: ymax 6 <= ymin 6",
        "resized.xml: <size> says 80x60 but resized.png is 40x30",
        "text.xml: object 1 (mass): xmin 'left', xmax '20px' not a number",
        "twice.xml: annotates both twice.jpg and twice.png",
        "image unreadable.png: cannot read it",
    ]
    assert f"{len(expected)} problem(s)" in message.splitlines()[0]
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.strip().startswith(start), (line, start)


def test_a_box_is_checked_against_the_image_when_size_is_missing(tmp_path):
    case(tmp_path / "img", "a.png", objects=[("mass", 1, 1, 40, 31)], xml_size=None)
    case(tmp_path / "img", "b.png", objects=[("mass", 1, 1, 40, 30)], xml_size=(0, 0))
    labels_for(tmp_path, ["a.png", "b.png"])
    message = error_of(tmp_path)
    assert "1 problem(s)" in message
    assert "a.xml: object 1 (mass): box (1, 1, 40, 31) lies outside the 40x30 image" in message


def test_a_stale_filename_is_not_an_error_and_not_used(tmp_path):
    img = tmp_path / "img"
    case(img, "case12.png", xml=False)
    case(img, "case13.png", xml=False)
    stale = voc_xml([MASS], filename="case13.png")  # copied from another case
    (img / "case12.xml").write_text(stale, encoding="utf-8")
    (img / "case13.xml").write_text(voc_xml([("mass", 1, 1, 5, 5)], "case13"), encoding="utf-8")
    labels_for(tmp_path, ["case12.png", "case13.png"])
    sample_set = source(tmp_path)
    assert [s.box for s in sample_set.samples] == [(10, 5, 20, 15), (0, 0, 5, 5)]
    assert sample_set.samples[0].files[1] == img / "case12.xml"
    assert "1 XML <filename> naming another image (ignored)" in sample_set.description


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE annotation [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>&lol9;</filename><object><name>mass</name><bndbox>
<xmin>11</xmin><ymin>6</ymin><xmax>20</xmax><ymax>15</ymax></bndbox></object></annotation>
"""


def test_doctype_and_entity_declarations_are_refused(tmp_path):
    img = tmp_path / "img"
    case(img, "laughs.png", xml=False)
    (img / "laughs.xml").write_text(BILLION_LAUGHS, encoding="utf-8")
    case(img, "wide.png", xml=False)  # a byte search for "<!DOCTYPE" would miss UTF-16
    doctype = '<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE annotation>\n'
    (img / "wide.xml").write_text(doctype + voc_xml(), encoding="utf-16")
    labels_for(tmp_path, ["laughs.png", "wide.png"])
    message = error_of(tmp_path)
    assert "2 problem(s)" in message
    for name in ("laughs.xml", "wide.xml"):
        assert f"{name}: contains a DOCTYPE or ENTITY declaration; refused" in message
    (img / "wide.xml").write_text(voc_xml(), encoding="utf-16")  # UTF-16 itself is fine
    labels_for(tmp_path, ["wide.png"])
    assert source(tmp_path, unlabelled="skip").samples[0].box == (10, 5, 20, 15)


def test_missing_folders_and_files_are_data_errors(tmp_path):
    assert "images folder not found" in error_of(tmp_path)
    (tmp_path / "img").mkdir()
    assert "labels file not found" in error_of(tmp_path)
    labels_for(tmp_path, [])
    assert "no image files" in error_of(tmp_path)
    case(tmp_path / "img", "a.png")
    assert "annotations folder not found" in error_of(tmp_path, annotations=str(tmp_path / "x"))


# --- through the engine ----------------------------------------------------------------------


def test_the_source_is_registered_and_its_options_are_strict(tmp_path):
    host = PluginHost()
    raw = tiny_raw()
    raw["data"]["source"] = {"type": "labelimg", "images": "i", "labels": "l.csv", "objets": "x"}
    with pytest.raises(ConfigError) as info:
        resolve_components(load_config(raw), host)
    assert dict(info.value.problems) == {"data.source.objets": "unknown key"}


def test_a_run_on_labelimg_data_trains_bm(tmp_path):
    rng = np.random.default_rng(0)
    img, rows = tmp_path / "img", []
    for patient in range(24):
        malignant = patient % 2
        for view in range(2):
            pixels = rng.integers(0, 80, size=(40, 48), dtype=np.uint8)
            x, y = int(rng.integers(2, 26)), int(rng.integers(2, 18))
            pixels[y : y + 16, x : x + 16] = 200 if malignant else 120
            box = ("mass", x + 1, y + 1, x + 16, y + 16)
            name = case(img, f"p{patient:02d}/v{view}.png", [box], size=(48, 40), pixels=pixels)
            rows.append([name, f"P{patient:02d}", "malignant" if malignant else "benign"])
    write_csv(tmp_path / "labels.csv", ["image", "patient_id", "bm"], rows)
    raw = tiny_raw(heads=["bm"], constraints=[])
    raw["data"]["source"] = {
        "type": "labelimg",
        "images": str(img),
        "labels": str(tmp_path / "labels.csv"),
    }
    raw["data"]["roi"] = {"mode": "box", "margin": 0.25}
    raw["data"]["split"]["stratify"] = ["bm"]
    raw["evaluation"]["reference_columns"] = {}
    run(load_config(raw), out_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["sets"]["test"]["tasks"]
    assert set(test) == {"bm"} and test["bm"]["auc"] is not None
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    images = [i for split in ("train", "val", "test") for i in splits[split]["images"]]
    assert sorted(images) == sorted(r[0] for r in rows)
    patients = [set(splits[s]["patients"]) for s in ("train", "val", "test")]
    assert sum(map(len, patients)) == 24  # each patient in exactly one split
    assert test["bm"]["n"] == 2 * len(patients[2])
