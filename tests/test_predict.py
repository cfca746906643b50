"""``mtl predict`` and ``mtlkit.predict_files``: a trained model's predictions for new image
files, folders, manifests and DICOM files, with the RoI of training, every bad file listed."""

from __future__ import annotations

import csv
import os
import shutil
import sys

import numpy as np
import pytest
from conftest import tiny_raw
from PIL import Image
from test_auto_roi import image_with_lesion, localiser_raw, localizer
from test_dicom import write_dicom

from mtlkit import (
    DataError,
    Engine,
    RoiConfig,
    Sample,
    UsageError,
    load_config,
    load_predictor,
    predict_files,
    prediction_columns,
    roi_box,
    run,
)
from mtlkit.cli import main
from mtlkit.plugins.synthetic.phantoms import generate_phantoms, write_phantom_set
from mtlkit.plugins.synthetic.source import SyntheticOptions

TASK_HEADS = [
    "bm",
    "alnm",
    {"type": "multiclass", "name": "bm_class", "label": "bm", "classes": ["benign", "malignant"]},
    {"type": "segmentation", "width": 8},
]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """A phantom set on disk: images/, masks/ and a manifest with boxes and masks."""
    options = SyntheticOptions(patients=24, image_size=32, seed=0)
    out = tmp_path_factory.mktemp("phantoms") / "set"
    write_phantom_set(generate_phantoms(options.settings(), seed=0), out)
    return out


@pytest.fixture(scope="module")
def trained(phantoms, tmp_path_factory):
    """A tiny run on the phantom manifest: binary, multiclass and segmentation heads, a
    constraint that adjusts outputs and test-time augmentation, all of which prediction
    must reproduce."""
    raw = tiny_raw()
    raw["data"]["source"] = {"type": "manifest", "path": str(phantoms / "manifest.csv")}
    raw["data"]["roi"] = {"mode": "box", "margin": 0.5}
    raw["heads"] = TASK_HEADS
    raw["constraints"] = [{"type": "coherent", "pairs": [["bm", "alnm"]]}]
    raw["evaluation"]["tta"] = "hflip"
    raw["evaluation"]["reference_columns"] = {"bm": "oracle_bm"}
    raw["training"]["epochs"] = 1
    out = tmp_path_factory.mktemp("trained") / "run"
    run(load_config(raw), out_dir=out)
    return out


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_manifest_with_boxes_gets_the_runs_own_probabilities(trained, phantoms):
    records = predict_files(trained, [phantoms / "manifest.csv"], device="cpu", batch_size=5)
    by_id = {r["image_id"]: r for r in records}
    evaluated = read_csv(trained / "predictions.csv")  # the engine's evaluation of val + test
    assert evaluated
    for row in evaluated:
        record = by_id[row["image_id"]]
        assert record["roi_source"] == "box" and record["error"] is None
        for column in ("bm_prob", "alnm_prob", "bm_class_prob_benign", "bm_class_prob_malignant"):
            assert record[column] == pytest.approx(float(row[column]), abs=2e-6), column
    for record in records:
        assert record["bm_pred"] == int(record["bm_prob"] > 0.5)
        assert record["bm_class_pred"] in ("benign", "malignant")
        assert record["alnm_prob"] <= record["bm_prob"] + 1e-7  # coherent: by construction
        assert record["alnm_raw_prob"] is not None and record["bm_raw_prob"] is not None
        assert 0.0 <= record["lesion_area"] <= 1.0
    assert list(records[0]) == prediction_columns(load_predictor(trained, device="cpu"))


def test_a_manifest_with_masks_cuts_the_masks_extent_plus_the_margin(trained, phantoms, tmp_path):
    rows = read_csv(phantoms / "manifest.csv")[:3]
    manifest = tmp_path / "masks.csv"
    manifest.write_text(
        "image,mask\n" + "".join(f"{phantoms / r['image']},{phantoms / r['mask']}\n" for r in rows)
    )
    inside = phantoms / "masks_only.csv"
    inside.write_text("image,mask\n" + "".join(f"{r['image']},{r['mask']}\n" for r in rows))
    records = predict_files(trained, [inside], device="cpu")
    for record, row in zip(records, rows, strict=True):
        image = np.asarray(Image.open(phantoms / row["image"]))
        mask = np.asarray(Image.open(phantoms / row["mask"])) > 0
        sample = Sample("x", "x", {}, image=lambda image=image: image, mask=lambda mask=mask: mask)
        expected = roi_box(sample, image, RoiConfig(mode="mask", margin=0.5))
        assert record["roi_source"] == "mask"
        assert (record["x0"], record["y0"], record["x1"], record["y1"]) == expected
    # paths outside a manifest's folder are accepted: the user names these files
    outside = predict_files(trained, [manifest], device="cpu")
    assert [r["error"] for r in outside] == [None] * 3
    assert [r["bm_prob"] for r in outside] == [r["bm_prob"] for r in records]


def test_files_and_folders_searched_recursively_other_types_ignored(trained, phantoms, tmp_path):
    folder = tmp_path / "new"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(phantoms / "images" / "p0000_i0.png", folder / "a.png")
    shutil.copy(phantoms / "images" / "p0001_i0.png", folder / "sub" / "b.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub" / "table.csv").write_text("a,b\n")  # a folder's CSV is no manifest
    single = phantoms / "images" / "p0002_i0.png"
    records = predict_files(trained, [folder, single, folder / "notes.txt"], device="cpu")
    assert [r["image_id"] for r in records] == [
        "a.png",
        "sub/b.png",
        str(single),
        str(folder / "notes.txt"),
    ]
    assert all(r["roi_source"] == "whole_image" and r["error"] is None for r in records[:3])
    assert (records[0]["x0"], records[0]["y0"]) == (0, 0)
    assert (records[0]["x1"], records[0]["y1"]) == (records[0]["width"], records[0]["height"])
    assert records[3]["bm_prob"] is None and "not an image file" in records[3]["error"]


def test_the_engine_api_records_and_data_frame(trained, phantoms, monkeypatch):
    engine = load_predictor(trained, device="cpu")
    paths = [phantoms / "images" / "p0000_i0.png"]
    records = predict_files(engine, paths)
    assert len(records) == 1 and set(records[0]) == set(prediction_columns(engine))
    monkeypatch.setitem(sys.modules, "pandas", None)  # pandas is optional
    with pytest.raises(UsageError, match="pip install pandas"):
        predict_files(engine, paths, as_frame=True)
    monkeypatch.undo()
    pandas = pytest.importorskip("pandas")
    frame = predict_files(engine, paths, as_frame=True)
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == prediction_columns(engine)
    assert frame["bm_prob"].iloc[0] == pytest.approx(records[0]["bm_prob"])


def test_an_image_smaller_than_the_input_is_upscaled_and_said_so(trained, tmp_path):
    Image.fromarray(np.full((8, 12), 90, dtype=np.uint8)).save(tmp_path / "tiny.png")
    (record,) = predict_files(trained, [tmp_path / "tiny.png"], device="cpu")
    assert record["error"] is None and "smaller than the model's 32x32 input" in record["warning"]


def test_a_probability_at_the_threshold_is_negative_as_in_the_metrics(trained, phantoms):
    engine = load_predictor(trained, device="cpu")
    paths = [phantoms / "images" / "p0000_i0.png"]
    (before,) = predict_files(engine, paths)
    engine.config.evaluation.threshold = before["bm_prob"]  # exactly the probability
    (record,) = predict_files(engine, paths)
    assert record["bm_prob"] == engine.config.evaluation.threshold and record["bm_pred"] == 0


def test_the_whole_image_given_to_a_box_model_is_said_so(trained, phantoms):
    (record,) = predict_files(trained, [phantoms / "images" / "p0000_i0.png"], device="cpu")
    assert record["roi_source"] == "whole_image" and record["error"] is None
    assert "trained on box RoIs" in record["warning"] and "whole image" in record["warning"]
    (boxed,) = predict_files(trained, [phantoms / "manifest.csv"], device="cpu")[:1]
    assert boxed["roi_source"] == "box" and boxed["warning"] is None


def test_each_bad_manifest_row_is_its_own_record_and_the_good_rows_are_kept(trained, phantoms):
    rows = read_csv(phantoms / "manifest.csv")[:2]
    manifest = phantoms / "some_bad.csv"
    manifest.write_text(
        f"image,patient_id\n{rows[0]['image']},p1\nimages/gone.png,p2\n{rows[1]['image']},p3\n,p4\n",
        encoding="utf-8",
    )
    records = predict_files(trained, manifest, device="cpu")  # a single path, not a list
    assert [r["image_id"] for r in records[:2]] == [rows[0]["image"], rows[1]["image"]]
    assert all(r["error"] is None for r in records[:2])
    assert [r["source"] for r in records[2:]] == ["some_bad.csv row 3", "some_bad.csv row 5"]
    assert "gone.png" in records[2]["error"] and "empty" in records[3]["error"]


def test_a_single_str_path_is_one_path(trained, phantoms):
    records = predict_files(trained, str(phantoms / "images"), device="cpu")
    assert len(records) == len(list((phantoms / "images").iterdir()))
    assert all(r["error"] is None for r in records)


def test_an_entry_that_cannot_be_examined_is_an_error_row(trained, phantoms, tmp_path, monkeypatch):
    import mtlkit.runs.prediction_inputs as inputs

    shutil.copy(phantoms / "images" / "p0000_i0.png", tmp_path / "a.png")
    (tmp_path / "locked").write_bytes(b"no extension: its DICOM marker is read")

    def is_dicom(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(inputs, "is_dicom", is_dicom)
    good, locked = predict_files(trained, [tmp_path], device="cpu")
    assert good["image_id"] == "a.png" and good["error"] is None
    assert locked["image_id"] == "locked" and "Permission denied" in locked["error"]


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 file names")
def test_a_non_utf8_file_name_is_written_printably(trained, phantoms, tmp_path, capsys):
    folder = tmp_path / "odd"
    folder.mkdir()
    name = os.fsdecode(b"bad\xff.png")
    shutil.copy(phantoms / "images" / "p0000_i0.png", folder / name)
    out, cams = tmp_path / "p.csv", tmp_path / "cams"
    code, _, stderr = predict_cli(
        capsys, "--checkpoint", trained, "--out", out, "--explain", cams, folder
    )
    assert code == 0, stderr
    (row,) = read_csv(out)
    assert row["image_id"] == "bad\\xff.png" and row["error"] == ""
    assert all((cams / r["heatmap"]).is_file() for r in read_csv(cams / "index.csv"))


def test_heatmaps_of_two_inputs_sharing_a_name_both_kept(trained, phantoms, tmp_path, capsys):
    for folder, image in (("a", "p0000_i0.png"), ("b", "p0001_i0.png")):
        (tmp_path / folder).mkdir()
        shutil.copy(phantoms / "images" / image, tmp_path / folder / "img.png")
    cams = tmp_path / "cams"
    code, _, stderr = predict_cli(
        capsys, "--checkpoint", trained, "--explain", cams, tmp_path / "a", tmp_path / "b"
    )
    assert code == 0, stderr
    heatmaps = [r["heatmap"] for r in read_csv(cams / "index.csv") if r["task"] == "bm"]
    assert len(heatmaps) == len(set(heatmaps)) == 2


def test_strict_stops_at_the_first_bad_file(trained, phantoms, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    good = phantoms / "images" / "p0000_i0.png"
    with pytest.raises(DataError, match=r"broken\.png"):
        predict_files(trained, [good, tmp_path / "broken.png"], device="cpu", strict=True)


def test_no_images_at_all_and_a_batch_of_none_are_usage_errors(trained, phantoms, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images found"):
        predict_files(trained, [tmp_path / "empty"], device="cpu")
    with pytest.raises(UsageError, match="batch size must be at least 1"):
        predict_files(trained, [phantoms / "images"], device="cpu", batch_size=0)


def test_the_localisers_lesion_is_the_roi_with_roi_mode_auto(tmp_path):
    raw = tiny_raw(heads=["bm", "alnm"], constraints=[])
    raw["evaluation"]["reference_columns"] = {}
    raw["data"]["roi"] = {"mode": "auto", "localizer": str(tmp_path / "unused"), "margin": 0.0}
    engine = Engine(load_config(raw))
    engine.build_model()
    stand_in = localizer()  # finds bright regions: an obvious lesion
    engine.locator = lambda roi: stand_in
    Image.fromarray(image_with_lesion()).save(tmp_path / "lesion.png")
    Image.fromarray(np.full((50, 70), 40, dtype=np.uint8)).save(tmp_path / "blank.png")
    found, blank = predict_files(engine, [tmp_path / "lesion.png", tmp_path / "blank.png"])
    assert found["roi_source"] == "localizer" and abs(found["x0"] - 180) <= 6
    assert abs(found["x1"] - 260) <= 6 and abs(found["y1"] - 120) <= 6
    assert blank["roi_source"] == "whole_image" and (blank["x1"], blank["y1"]) == (70, 50)
    # the same probabilities as Engine.predict_whole for the same images
    probabilities, _ = engine.predict_whole([image_with_lesion(), np.full((50, 70), 40, np.uint8)])
    assert found["bm_prob"] == pytest.approx(float(probabilities["bm"][0]), abs=1e-6)
    assert blank["bm_prob"] == pytest.approx(float(probabilities["bm"][1]), abs=1e-6)


def test_roi_mode_auto_uses_the_localiser_even_where_a_row_has_a_box(phantoms, tmp_path):
    raw = tiny_raw(heads=["bm", "alnm"], constraints=[])
    raw["evaluation"]["reference_columns"] = {}
    raw["data"]["roi"] = {"mode": "auto", "localizer": str(tmp_path / "unused"), "margin": 0.0}
    engine = Engine(load_config(raw))
    engine.build_model()
    stand_in = localizer()
    engine.locator = lambda roi: stand_in
    records = predict_files(engine, [phantoms / "manifest.csv"])  # every row has a box
    assert records and all(r["error"] is None for r in records)
    for record in records:
        image = np.asarray(Image.open(phantoms / record["image_id"]))
        box, found = engine.whole_image_roi(image)  # as evaluation cuts val and test images
        assert record["roi_source"] == ("localizer" if found else "whole_image")
        assert (record["x0"], record["y0"], record["x1"], record["y1"]) == box


def test_a_trained_localisers_checkpoint_cuts_the_roi(phantoms, tmp_path):
    localiser = tmp_path / "localiser"
    run(load_config(localiser_raw()), out_dir=localiser)
    raw = tiny_raw(heads=["bm", "alnm"], constraints=[])
    raw["evaluation"]["reference_columns"] = {}
    raw["data"]["roi"] = {"mode": "auto", "localizer": str(localiser), "margin": 0.1}
    engine = Engine(load_config(raw))
    engine.build_model()
    files = sorted((phantoms / "images").iterdir())[:4]
    records = predict_files(engine, files)
    for record, file in zip(records, files, strict=True):
        image = np.asarray(Image.open(file))
        box, found = engine.whole_image_roi(image)  # the localiser of the checkpoint
        assert record["roi_source"] == ("localizer" if found else "whole_image")
        assert (record["x0"], record["y0"], record["x1"], record["y1"]) == box


def test_roi_blend_mixes_the_localisers_own_probability_of_the_whole_image(phantoms, tmp_path):
    localiser = tmp_path / "localiser"
    run(load_config(localiser_raw()), out_dir=localiser)
    engines = {}
    for blend in (0.0, 0.25):
        raw = tiny_raw(heads=["bm", "alnm"], constraints=[])
        raw["evaluation"]["reference_columns"] = {}
        raw["data"]["roi"] = {"mode": "auto", "localizer": str(localiser), "blend": blend}
        engines[blend] = Engine(load_config(raw))
        engines[blend].build_model()  # the same seed: the same weights
    files = sorted((phantoms / "images").iterdir())[:4]
    images = [np.asarray(Image.open(file)) for file in files]
    whole = engines[0.25].locator(engines[0.25].config.data.roi).task_probabilities(images)
    plain, mixed = (predict_files(engines[b], files) for b in (0.0, 0.25))
    for task in ("bm", "alnm"):  # both models predict both
        crop = np.array([r[f"{task}_prob"] for r in plain])
        np.testing.assert_allclose(
            [r[f"{task}_prob"] for r in mixed], 0.75 * crop + 0.25 * whole[task], atol=1e-5
        )
        assert not np.allclose(crop, whole[task], atol=1e-3)  # the mix is not a no-op
    probabilities, _ = engines[0.25].predict_whole(images)
    np.testing.assert_allclose(probabilities["bm"], [r["bm_prob"] for r in mixed], atol=1e-5)


# --- the command line ----------------------------------------------------------------------


def predict_cli(capsys, *args):
    code = main(["predict", "--quiet", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def test_the_cli_lists_bad_files_and_predicts_the_others(trained, phantoms, tmp_path, capsys):
    pixels = np.asarray(Image.open(phantoms / "images" / "p0003_i0.png"))
    write_dicom(tmp_path / "scan" / "noext", pixels)  # DICOM without an extension
    nopix = write_dicom(tmp_path / "nopix.dcm", pixels, pixel_data=False)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    good = phantoms / "images" / "p0000_i0.png"
    out = tmp_path / "predictions.csv"
    code, stdout, stderr = predict_cli(
        capsys,
        "--checkpoint",
        trained,
        "--out",
        out,
        good,
        tmp_path / "broken.png",
        nopix,
        tmp_path / "scan",
    )
    assert code == 0, stderr
    rows = {r["image_id"]: r for r in read_csv(out)}
    assert rows[str(good)]["error"] == "" and 0 <= float(rows[str(good)]["bm_prob"]) <= 1
    assert rows["noext"]["error"] == "" and rows["noext"]["roi_source"] == "whole_image"
    assert "cannot read image" in rows[str(tmp_path / "broken.png")]["error"]
    assert "no pixel data" in rows[str(nopix)]["error"]
    assert "broken.png" in stderr and "nopix.dcm" in stderr and "2 skipped" in stdout

    code, _, stderr = predict_cli(capsys, "--checkpoint", trained, "--out", out, good)
    assert code == 2 and "already exists" in stderr  # an existing output is kept ...
    code, _, stderr = predict_cli(capsys, "--checkpoint", trained, "--out", out, "--force", good)
    assert code == 0 and len(read_csv(out)) == 1  # ... unless --force
    assert "using checkpoint" in stderr and "best.safetensors" in stderr  # a run dir's pick


def test_the_cli_fails_when_every_file_fails_and_with_strict(trained, phantoms, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out.csv"
    code, _, stderr = predict_cli(
        capsys,
        "--checkpoint",
        trained,
        "--out",
        out,
        tmp_path / "broken.png",
        tmp_path / "gone.png",
    )
    assert code == 2 and "none of the 2 image(s)" in stderr and not out.exists()
    good = phantoms / "images" / "p0000_i0.png"
    code, _, stderr = predict_cli(
        capsys, "--checkpoint", trained, "--strict", "--out", out, good, tmp_path / "broken.png"
    )
    assert code == 2 and "broken.png" in stderr and not out.exists()


def test_the_cli_prints_a_table_and_writes_grad_cam_overlays(trained, phantoms, tmp_path, capsys):
    explained = tmp_path / "cams"
    image = phantoms / "images" / "p0000_i0.png"
    code, stdout, stderr = predict_cli(
        capsys, "--checkpoint", trained, "--explain", explained, "--device", "cpu", image
    )
    assert code == 0, stderr
    assert "predictions" in stdout and "1 image(s) predicted" in " ".join(stdout.split())
    assert " -> " in stdout  # each binary task's probability and decision
    index = read_csv(explained / "index.csv")
    assert sorted(r["task"] for r in index) == ["alnm", "bm", "bm_class"]
    assert all((explained / r["heatmap"]).is_file() for r in index)
